//! The event as Herald delivers it to clients (contract section 2).

use serde::{Deserialize, Serialize};

/// One delivered event. `seq` is the JetStream stream sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredEvent {
    /// JetStream stream sequence.
    pub seq: u64,
    /// Organisation.
    pub org_id: String,
    /// Publishing service.
    pub service: String,
    /// Property, `null` for org-wide events.
    pub property_id: Option<String>,
    /// Publisher's event id (or the defaults of the contract).
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Entity kind, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    /// Entity id, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// Free-form payload.
    #[serde(default)]
    pub payload: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_as_the_contract_shows() {
        let ev = DeliveredEvent {
            seq: 42,
            org_id: "acme".into(),
            service: "finance".into(),
            property_id: None,
            event_id: "e-1".into(),
            event_type: "expense.created".into(),
            timestamp: 1_732_280_000_000,
            entity_type: None,
            entity_id: None,
            payload: json!({"amount": 10}),
        };
        assert_eq!(
            serde_json::to_value(&ev).unwrap(),
            json!({"seq":42,"orgId":"acme","service":"finance","propertyId":null,"eventId":"e-1",
                   "eventType":"expense.created","timestamp":1_732_280_000_000_i64,"payload":{"amount":10}})
        );
        let mp = rmp_serde::to_vec_named(&ev).unwrap();
        assert_eq!(rmp_serde::from_slice::<DeliveredEvent>(&mp).unwrap(), ev);
    }
}
