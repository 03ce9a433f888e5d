//! What one client receives: its org's events of the services it asked for
//! (and may see), of the property it asked for (and may see), plus org-wide
//! events. Built from request parameters and checked against the token and
//! the node's service rules ([`ServiceSet`]: kill switches, and the
//! `HERALD_SERVICES` list of services that exist).

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::org::decode::StoredEvent;
use crate::org::EventFilter;

/// Most services one subscription may name.
const MAX_SERVICES: usize = 64;

/// The node's rules about services: which are switched off, and (when
/// `HERALD_SERVICES` is set) which exist at all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceSet {
    disabled: HashSet<String>,
    known: Option<Arc<HashSet<String>>>,
}

impl ServiceSet {
    /// Rules with `disabled` switched off and only `known` existing
    /// (`None`: any valid name exists).
    pub fn new(disabled: HashSet<String>, known: Option<Arc<HashSet<String>>>) -> Self {
        Self { disabled, known }
    }

    /// Is `service` switched off?
    pub fn is_disabled(&self, service: &str) -> bool {
        self.disabled.contains(service)
    }

    /// The services switched off.
    pub fn disabled(&self) -> impl Iterator<Item = &String> {
        self.disabled.iter()
    }

    /// Does `service` exist? Always true without `HERALD_SERVICES`.
    pub fn is_known(&self, service: &str) -> bool {
        self.known.as_ref().is_none_or(|k| k.contains(service))
    }
}

/// Refuses (400) a service name outside `HERALD_SERVICES`, so a typo is an
/// error rather than a quiet feed.
pub fn check_known(rules: &ServiceSet, service: &str) -> Result<(), ApiError> {
    if rules.is_known(service) {
        Ok(())
    } else {
        Err(ApiError::BadParameter(format!("unknown service {service}")))
    }
}

/// A client's event filter. The org is implied by the buffer it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Services to deliver; `None` = every service the token allows.
    services: Option<HashSet<String>>,
    /// Services the token allows; `None` = all.
    allowed_services: Option<HashSet<String>>,
    /// Property asked for; `None` = every property the token allows.
    property: Option<String>,
    /// Properties the token allows; `None` = all.
    allowed_props: Option<HashSet<String>>,
    /// The node's service rules (kill switches, known services).
    disabled: Arc<ServiceSet>,
}

impl Filter {
    /// Builds a filter for `principal`. Services or a property outside the
    /// token's claims are 403; malformed or unknown names are 400.
    pub fn new(
        principal: &Principal,
        services: Option<Vec<String>>,
        property: Option<String>,
        disabled: Arc<ServiceSet>,
    ) -> Result<Self, ApiError> {
        let services = match services {
            Some(list) => {
                if list.is_empty() {
                    return Err(ApiError::BadParameter(
                        "services must name at least one service".into(),
                    ));
                }
                if list.len() > MAX_SERVICES {
                    return Err(ApiError::BadParameter(format!(
                        "at most {MAX_SERVICES} services"
                    )));
                }
                for s in &list {
                    herald_proto::subject::check_token("service", s)
                        .map_err(|e| ApiError::BadParameter(e.to_string()))?;
                    if !principal.may_see_service(s) {
                        return Err(ApiError::Forbidden(format!(
                            "token does not allow service {s}"
                        )));
                    }
                    check_known(&disabled, s)?;
                }
                Some(list.into_iter().collect())
            }
            None => None,
        };
        if let Some(p) = &property {
            herald_proto::subject::check_token("propertyId", p)
                .map_err(|e| ApiError::BadParameter(e.to_string()))?;
            if !principal.may_see_property(Some(p)) {
                return Err(ApiError::Forbidden(format!(
                    "token does not allow property {p}"
                )));
            }
        }
        Ok(Self {
            services,
            allowed_services: principal.svcs.clone(),
            property,
            allowed_props: principal.props.clone(),
            disabled,
        })
    }

    /// Takes the node's current service rules (the kill switch may have changed).
    pub fn set_disabled(&mut self, disabled: Arc<ServiceSet>) {
        if !Arc::ptr_eq(&self.disabled, &disabled) {
            self.disabled = disabled;
        }
    }

    /// The property asked for.
    pub fn property(&self) -> Option<&str> {
        self.property.as_deref()
    }

    /// The services asked for (`None` = all the token allows), sorted.
    pub fn services(&self) -> Option<Vec<String>> {
        self.services.as_ref().map(|s| {
            let mut v: Vec<String> = s.iter().cloned().collect();
            v.sort();
            v
        })
    }

    /// Does this client receive `event`?
    pub fn matches(&self, event: &StoredEvent) -> bool {
        let e = &event.event;
        if self.disabled.is_disabled(&e.service) {
            return false;
        }
        let service_ok = match &self.services {
            Some(s) => s.contains(&e.service),
            None => self
                .allowed_services
                .as_ref()
                .is_none_or(|s| s.contains(&e.service)),
        };
        if !service_ok {
            return false;
        }
        match (&e.property_id, &self.property) {
            (None, _) => true,
            (Some(p), Some(wanted)) => p == wanted,
            (Some(p), None) => self.allowed_props.as_ref().is_none_or(|a| a.contains(p)),
        }
    }
}

/// Splits a comma-separated `services` parameter.
pub fn split_services(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl EventFilter for Filter {
    fn matches(&self, event: &StoredEvent) -> bool {
        Filter::matches(self, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(props: Option<&[&str]>, svcs: Option<&[&str]>) -> Principal {
        Principal {
            user: "u".into(),
            org: "acme".into(),
            props: props.map(|p| p.iter().map(|s| s.to_string()).collect()),
            svcs: svcs.map(|p| p.iter().map(|s| s.to_string()).collect()),
            role: None,
            rooms: None,
            exp: 0,
        }
    }

    fn event(service: &str, property: Option<&str>) -> std::sync::Arc<StoredEvent> {
        StoredEvent::for_test(1, service, property, serde_json::Value::Null)
    }

    #[test]
    fn property_filter_keeps_org_wide_events() {
        let f = Filter::new(
            &principal(None, None),
            Some(vec!["finance".into()]),
            Some("p1".into()),
            Default::default(),
        )
        .unwrap();
        assert!(f.matches(&event("finance", Some("p1"))));
        assert!(f.matches(&event("finance", None)));
        assert!(!f.matches(&event("finance", Some("p2"))));
        assert!(!f.matches(&event("tasks", Some("p1"))));
    }

    #[test]
    fn token_claims_limit_what_is_seen_and_asked() {
        let p = principal(Some(&["p1"]), Some(&["finance", "guest"]));
        let all = Filter::new(&p, None, None, Default::default()).unwrap();
        assert!(all.matches(&event("guest", Some("p1"))));
        assert!(!all.matches(&event("guest", Some("p2"))));
        assert!(!all.matches(&event("tasks", None)));
        assert!(matches!(
            Filter::new(&p, Some(vec!["tasks".into()]), None, Default::default()),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            Filter::new(&p, None, Some("p2".into()), Default::default()),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            Filter::new(&p, Some(vec!["bad name".into()]), None, Default::default()),
            Err(ApiError::BadParameter(_))
        ));
        assert!(matches!(
            Filter::new(&p, Some(vec![]), None, Default::default()),
            Err(ApiError::BadParameter(_))
        ));
    }

    #[test]
    fn kill_switch_hides_services() {
        let f = Filter::new(
            &principal(None, None),
            None,
            None,
            Arc::new(ServiceSet::new(["analytics".to_owned()].into(), None)),
        )
        .unwrap();
        assert!(!f.matches(&event("analytics", None)));
        assert!(f.matches(&event("finance", None)));
    }

    #[test]
    fn unknown_services_are_refused_only_with_a_list() {
        let p = principal(None, None);
        let known = Arc::new(ServiceSet::new(
            Default::default(),
            Some(Arc::new(["finance".to_owned()].into())),
        ));
        assert!(Filter::new(&p, Some(vec!["finance".into()]), None, known.clone()).is_ok());
        assert!(Filter::new(&p, None, None, known.clone()).is_ok());
        assert!(matches!(
            Filter::new(&p, Some(vec!["finanse".into()]), None, known.clone()),
            Err(ApiError::BadParameter(_))
        ));
        assert!(check_known(&known, "finanse").is_err());
        assert!(check_known(&ServiceSet::default(), "finanse").is_ok());
    }
}
