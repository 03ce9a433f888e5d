//! A small hospitality world that produces plausible Herald events: expenses
//! that are created, corrected and deleted; guests who check in, change rooms
//! and check out; housekeeping and maintenance tasks that move from open to
//! done; staff who start and end shifts.
//!
//! Pure and deterministic for a given seed: the runner feeds it the clock,
//! the tests feed it a fixed seed. The world advances when an event is
//! generated, whether or not publishing it later succeeds.

use herald_proto::{EventBody, EventSubject};
use herald_publisher::OutgoingEvent;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Services the demo publishes for.
pub const SERVICES: [&str; 4] = ["finance", "guest", "tasks", "staff"];

/// Live entities of one kind per (org, property) before the world stops
/// creating new ones and only updates or deletes.
const MAX_LIVE: usize = 12;
/// Share of finance and task events that belong to no property.
const ORG_WIDE_SHARE: f64 = 0.15;
/// Staff members per property, plus this many org-wide managers.
const STAFF_PER_PROPERTY: usize = 4;
const MANAGERS_PER_ORG: usize = 2;

const CITIES: [&str; 12] = [
    "lisbon", "porto", "seville", "vienna", "prague", "oslo", "dublin", "lyon", "bruges", "krakow",
    "split", "bergen",
];
const FIRST_NAMES: [&str; 16] = [
    "Ana", "Ben", "Chloe", "Diego", "Elif", "Farah", "Goran", "Hana", "Ivan", "Julia", "Kenji",
    "Lena", "Mateo", "Nora", "Omar", "Priya",
];
const LAST_NAMES: [&str; 16] = [
    "Almeida", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ito",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov",
];
const EXPENSE_CATEGORIES: [&str; 6] = [
    "housekeeping",
    "maintenance",
    "food_and_beverage",
    "utilities",
    "marketing",
    "supplies",
];
const TASK_TITLES: [&str; 8] = [
    "Clean room",
    "Replace towels",
    "Fix leaking tap",
    "Check minibar",
    "Replace light bulb",
    "Deliver extra pillows",
    "Inspect fire extinguisher",
    "Restock lobby brochures",
];
const ORG_TASK_TITLES: [&str; 4] = [
    "Approve monthly budget",
    "Renew supplier contract",
    "Review guest feedback",
    "Plan staff training",
];
const STAFF_ROLES: [&str; 4] = ["receptionist", "housekeeper", "technician", "concierge"];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const GUEST_CHANGES: [&str; 3] = ["room_change", "late_checkout", "special_request"];
const STAFF_CHANGES: [&str; 3] = ["phone", "languages", "certifications"];

/// The simulated platform: orgs, their properties, and every live entity.
#[derive(Debug)]
pub struct Simulation {
    orgs: Vec<Org>,
    rng: StdRng,
}

#[derive(Debug)]
struct Org {
    id: String,
    currency: &'static str,
    /// Index 0 is org-wide (no property), then one per property.
    scopes: Vec<Scope>,
    staff: Vec<StaffMember>,
}

#[derive(Debug)]
struct Scope {
    property: Option<String>,
    expenses: Vec<Expense>,
    stays: Vec<Stay>,
    tasks: Vec<Task>,
}

#[derive(Debug)]
struct Expense {
    id: String,
    cents: u64,
    category: &'static str,
}

#[derive(Debug)]
struct Stay {
    id: String,
    guest: String,
    room: u32,
    nights: u32,
}

#[derive(Debug, PartialEq)]
enum TaskStatus {
    Open,
    InProgress,
    Done,
}

#[derive(Debug)]
struct Task {
    id: String,
    title: &'static str,
    status: TaskStatus,
    assignee: Option<String>,
}

#[derive(Debug)]
struct StaffMember {
    id: String,
    name: String,
    role: &'static str,
    /// Index into the org's scopes (0: an org-wide manager).
    scope: usize,
    shift: Option<String>,
}

/// What one generated event says, before it is wrapped for publishing.
struct Draft {
    event_type: &'static str,
    entity_type: &'static str,
    entity_id: String,
    payload: Value,
}

impl Simulation {
    /// A world of `orgs`, each with `properties_per_org` properties named
    /// after cities, seeded for reproducibility.
    pub fn new(orgs: &[String], properties_per_org: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let orgs = orgs
            .iter()
            .enumerate()
            .map(|(i, org)| {
                let mut scopes = vec![Scope::new(None)];
                scopes.extend((0..properties_per_org).map(|j| Scope::new(Some(property_id(j)))));
                let mut staff = Vec::new();
                for _ in 0..MANAGERS_PER_ORG {
                    staff.push(StaffMember::new(&mut rng, 0, "manager"));
                }
                for scope in 1..scopes.len() {
                    for role in STAFF_ROLES.iter().cycle().take(STAFF_PER_PROPERTY) {
                        staff.push(StaffMember::new(&mut rng, scope, role));
                    }
                }
                Org {
                    id: org.clone(),
                    currency: CURRENCIES[i % CURRENCIES.len()],
                    scopes,
                    staff,
                }
            })
            .collect();
        Self { orgs, rng }
    }

    /// The next event, stamped `now_ms`. Subjects and bodies always pass
    /// [`EventBody::decode`]; the event id is left to the publisher.
    ///
    /// # Panics
    /// Never for a simulation built from valid org ids (the runner validates
    /// them first); an invalid org id would make the subject unbuildable.
    pub fn next_event(&mut self, now_ms: i64) -> OutgoingEvent {
        let org_index = self.rng.random_range(0..self.orgs.len());
        // finance 30 %, guest 30 %, tasks 25 %, staff 15 %.
        let roll = self.rng.random_range(0..100);
        let service = match roll {
            0..30 => "finance",
            30..60 => "guest",
            60..85 => "tasks",
            _ => "staff",
        };
        let org = &mut self.orgs[org_index];
        let rng = &mut self.rng;
        let property_scope = rng.random_range(1..org.scopes.len());
        let (scope, draft) = match service {
            "finance" => {
                let s = pick_scope(rng, property_scope);
                (s, finance(rng, &mut org.scopes[s], org.currency))
            }
            "guest" => (property_scope, guest(rng, &mut org.scopes[property_scope])),
            "tasks" => {
                let s = pick_scope(rng, property_scope);
                let names: Vec<&str> = org
                    .staff
                    .iter()
                    .filter(|m| m.scope == s)
                    .map(|m| m.name.as_str())
                    .collect();
                let assignee = names.choose(rng).map(|n| (*n).to_owned());
                (s, tasks(rng, &mut org.scopes[s], assignee))
            }
            _ => {
                let i = rng.random_range(0..org.staff.len());
                let member = &mut org.staff[i];
                (member.scope, staff(rng, member))
            }
        };
        let property = org.scopes[scope].property.clone();
        let subject = EventSubject::new(&org.id, service, property.as_deref())
            .unwrap_or_else(|e| panic!("org id {:?} is not a valid token: {e}", org.id));
        OutgoingEvent::new(
            subject,
            EventBody {
                event_type: Some(draft.event_type.to_owned()),
                event_id: None,
                timestamp: Some(now_ms),
                entity_type: Some(draft.entity_type.to_owned()),
                entity_id: Some(draft.entity_id),
                payload: draft.payload,
                org_id: Some(org.id.clone()),
                service: Some(service.to_owned()),
                property_id: property,
            },
        )
    }
}

/// Property ids: city names, with a number once the cities run out.
fn property_id(index: usize) -> String {
    let city = CITIES[index % CITIES.len()];
    match index / CITIES.len() {
        0 => city.to_owned(),
        n => format!("{city}-{}", n + 1),
    }
}

fn pick_scope(rng: &mut StdRng, property_scope: usize) -> usize {
    if rng.random_bool(ORG_WIDE_SHARE) {
        0
    } else {
        property_scope
    }
}

fn entity_id(rng: &mut StdRng, prefix: &str) -> String {
    format!("{prefix}-{:08x}", rng.random::<u32>())
}

fn person(rng: &mut StdRng) -> String {
    let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
    format!("{first} {last}")
}

/// Whether to create a new entity rather than touch a live one.
fn should_create(rng: &mut StdRng, live: usize) -> bool {
    live == 0 || (live < MAX_LIVE && rng.random_bool(0.4))
}

fn money(cents: u64) -> f64 {
    cents as f64 / 100.0
}

fn finance(rng: &mut StdRng, scope: &mut Scope, currency: &str) -> Draft {
    let (event_type, expense) = if should_create(rng, scope.expenses.len()) {
        scope.expenses.push(Expense {
            id: entity_id(rng, "exp"),
            cents: rng.random_range(500..250_000),
            category: EXPENSE_CATEGORIES[rng.random_range(0..EXPENSE_CATEGORIES.len())],
        });
        let last = scope.expenses.len() - 1;
        ("expense.created", &scope.expenses[last])
    } else {
        let i = rng.random_range(0..scope.expenses.len());
        if rng.random_bool(0.7) {
            // A correction of up to ±20 %.
            let e = &mut scope.expenses[i];
            let factor = rng.random_range(0.8..1.2);
            e.cents = ((e.cents as f64 * factor).round() as u64).max(100);
            ("expense.updated", &scope.expenses[i])
        } else {
            let e = scope.expenses.swap_remove(i);
            return Draft {
                event_type: "expense.deleted",
                entity_type: "expense",
                payload: json!({"amount": money(e.cents), "currency": currency, "category": e.category}),
                entity_id: e.id,
            };
        }
    };
    Draft {
        event_type,
        entity_type: "expense",
        entity_id: expense.id.clone(),
        payload: json!({
            "amount": money(expense.cents),
            "currency": currency,
            "category": expense.category,
        }),
    }
}

fn free_room(rng: &mut StdRng, stays: &[Stay]) -> u32 {
    loop {
        let room = rng.random_range(1..=6) * 100 + rng.random_range(1..=30);
        if stays.iter().all(|s| s.room != room) {
            return room;
        }
    }
}

fn guest(rng: &mut StdRng, scope: &mut Scope) -> Draft {
    if should_create(rng, scope.stays.len()) {
        let stay = Stay {
            id: entity_id(rng, "stay"),
            guest: person(rng),
            room: free_room(rng, &scope.stays),
            nights: rng.random_range(1..=7),
        };
        let draft = Draft {
            event_type: "guest.checked_in",
            entity_type: "guest_stay",
            entity_id: stay.id.clone(),
            payload: json!({"guestName": stay.guest, "room": stay.room, "nights": stay.nights}),
        };
        scope.stays.push(stay);
        return draft;
    }
    let i = rng.random_range(0..scope.stays.len());
    if rng.random_bool(0.5) {
        let change = GUEST_CHANGES[rng.random_range(0..GUEST_CHANGES.len())];
        if change == "room_change" {
            let room = free_room(rng, &scope.stays);
            scope.stays[i].room = room;
        }
        let stay = &scope.stays[i];
        Draft {
            event_type: "guest.updated",
            entity_type: "guest_stay",
            entity_id: stay.id.clone(),
            payload: json!({"guestName": stay.guest, "room": stay.room, "change": change}),
        }
    } else {
        let stay = scope.stays.swap_remove(i);
        Draft {
            event_type: "guest.checked_out",
            entity_type: "guest_stay",
            entity_id: stay.id,
            payload: json!({"guestName": stay.guest, "room": stay.room, "nights": stay.nights}),
        }
    }
}

fn tasks(rng: &mut StdRng, scope: &mut Scope, assignee: Option<String>) -> Draft {
    let org_wide = scope.property.is_none();
    if should_create(rng, scope.tasks.len()) {
        let titles: &[&'static str] = if org_wide {
            &ORG_TASK_TITLES
        } else {
            &TASK_TITLES
        };
        let task = Task {
            id: entity_id(rng, "task"),
            title: titles[rng.random_range(0..titles.len())],
            status: TaskStatus::Open,
            assignee: None,
        };
        let priority = ["low", "normal", "high"][rng.random_range(0..3)];
        let mut payload = json!({"title": task.title, "status": "open", "priority": priority});
        if !org_wide {
            payload["room"] = json!(rng.random_range(1..=6) * 100 + rng.random_range(1..=30));
        }
        let draft = Draft {
            event_type: "task.created",
            entity_type: "task",
            entity_id: task.id.clone(),
            payload,
        };
        scope.tasks.push(task);
        return draft;
    }
    let i = rng.random_range(0..scope.tasks.len());
    let task = &mut scope.tasks[i];
    let event_type = match task.status {
        TaskStatus::Done => {
            let task = scope.tasks.swap_remove(i);
            return Draft {
                event_type: "task.deleted",
                entity_type: "task",
                entity_id: task.id,
                payload: json!({"title": task.title}),
            };
        }
        TaskStatus::Open => {
            task.status = TaskStatus::InProgress;
            task.assignee = assignee;
            "task.updated"
        }
        TaskStatus::InProgress if rng.random_bool(0.3) => {
            task.assignee = assignee.or(task.assignee.take());
            "task.updated"
        }
        TaskStatus::InProgress => {
            task.status = TaskStatus::Done;
            "task.completed"
        }
    };
    let status = match task.status {
        TaskStatus::Open => "open",
        TaskStatus::InProgress => "in_progress",
        TaskStatus::Done => "done",
    };
    Draft {
        event_type,
        entity_type: "task",
        entity_id: task.id.clone(),
        payload: json!({"title": task.title, "status": status, "assignee": task.assignee}),
    }
}

impl StaffMember {
    fn new(rng: &mut StdRng, scope: usize, role: &'static str) -> Self {
        Self {
            id: entity_id(rng, "staff"),
            name: person(rng),
            role,
            scope,
            shift: None,
        }
    }
}

fn staff(rng: &mut StdRng, member: &mut StaffMember) -> Draft {
    let event_type = if rng.random_bool(0.2) {
        "staff.updated"
    } else if member.shift.is_none() {
        member.shift = Some(entity_id(rng, "shift"));
        "shift.started"
    } else {
        "shift.ended"
    };
    let shift = if event_type == "shift.ended" {
        member.shift.take()
    } else {
        member.shift.clone()
    };
    let mut payload = json!({
        "staffName": member.name,
        "role": member.role,
        "onShift": member.shift.is_some(),
    });
    if let Some(shift) = shift {
        payload["shiftId"] = json!(shift);
    }
    if event_type == "staff.updated" {
        payload["change"] = json!(STAFF_CHANGES[rng.random_range(0..STAFF_CHANGES.len())]);
    }
    Draft {
        event_type,
        entity_type: "staff",
        entity_id: member.id.clone(),
        payload,
    }
}

impl Scope {
    fn new(property: Option<String>) -> Self {
        Self {
            property,
            expenses: Vec::new(),
            stays: Vec::new(),
            tasks: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use herald_proto::Encoding;

    use super::*;

    fn orgs() -> Vec<String> {
        ["acme-hotels", "globex-resorts", "initech-inns"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn events_have_valid_subjects_and_bodies_in_both_encodings() {
        let mut sim = Simulation::new(&orgs(), 3, 7);
        let mut services = HashSet::new();
        let mut org_wide = 0;
        for i in 0..2000 {
            let ev = sim.next_event(1_700_000_000_000 + i);
            let subject = EventSubject::parse(&ev.subject.to_subject()).expect("valid subject");
            assert_eq!(subject, ev.subject);
            assert!(SERVICES.contains(&subject.service.as_str()));
            services.insert(subject.service.clone());
            org_wide += usize::from(subject.property.is_none());
            for encoding in [Encoding::Json, Encoding::MessagePack] {
                let bytes = ev.body.encode(encoding);
                let body = EventBody::decode(&bytes, encoding, &subject, 262_144)
                    .expect("body the edge accepts");
                assert_eq!(body, ev.body);
            }
            let ty = ev.body.event_type.as_deref().unwrap_or_default();
            let prefix = match subject.service.as_str() {
                "finance" => "expense.",
                "guest" => "guest.",
                "tasks" => "task.",
                _ => "",
            };
            assert!(ty.starts_with(prefix), "{ty} from {}", subject.service);
            if subject.service == "guest" {
                assert!(
                    subject.property.is_some(),
                    "guest events belong to a property"
                );
            }
        }
        assert_eq!(services.len(), 4);
        assert!(
            org_wide > 50 && org_wide < 800,
            "{org_wide} org-wide events"
        );
    }

    #[test]
    fn entities_are_created_before_they_change_and_never_touched_after_deletion() {
        let mut sim = Simulation::new(&orgs(), 2, 42);
        // entity id -> is it live?
        let mut live: HashMap<String, bool> = HashMap::new();
        let mut deleted = 0;
        let mut updated = 0;
        for i in 0..3000 {
            let ev = sim.next_event(i);
            let id = ev.body.entity_id.clone().expect("entity id");
            let ty = ev.body.event_type.clone().expect("event type");
            if ev.body.entity_type.as_deref() == Some("staff") {
                continue; // staff members exist from the start
            }
            match ty.as_str() {
                "expense.created" | "guest.checked_in" | "task.created" => {
                    assert!(live.insert(id, true).is_none(), "{ty}: id reused");
                }
                "expense.deleted" | "guest.checked_out" | "task.deleted" => {
                    assert_eq!(live.insert(id, false), Some(true), "{ty} of a dead entity");
                    deleted += 1;
                }
                _ => {
                    assert_eq!(live.get(&id), Some(&true), "{ty} of a dead entity");
                    updated += 1;
                }
            }
        }
        assert!(
            deleted > 100 && updated > 100,
            "{deleted} deleted, {updated} updated"
        );
    }

    #[test]
    fn shifts_alternate_per_staff_member() {
        let mut sim = Simulation::new(&orgs()[..1], 1, 3);
        let mut on_shift: HashMap<String, bool> = HashMap::new();
        for i in 0..2000 {
            let ev = sim.next_event(i);
            let id = ev.body.entity_id.clone().expect("entity id");
            match ev.body.event_type.as_deref() {
                Some("shift.started") => {
                    assert_ne!(on_shift.insert(id, true), Some(true), "started twice")
                }
                Some("shift.ended") => {
                    assert_eq!(on_shift.insert(id, false), Some(true), "ended while off")
                }
                _ => {}
            }
        }
        assert!(!on_shift.is_empty());
    }

    #[test]
    fn same_seed_same_world() {
        let mut a = Simulation::new(&orgs(), 3, 11);
        let mut b = Simulation::new(&orgs(), 3, 11);
        for i in 0..200 {
            assert_eq!(a.next_event(i), b.next_event(i));
        }
    }

    #[test]
    fn property_ids_are_unique_tokens() {
        let ids: HashSet<String> = (0..40).map(property_id).collect();
        assert_eq!(ids.len(), 40);
        for id in &ids {
            herald_proto::subject::check_token("propertyId", id).expect("token");
        }
    }
}
