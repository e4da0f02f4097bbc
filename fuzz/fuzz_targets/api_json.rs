//! API request bodies: every request type parsed from arbitrary bytes must give a value or a
//! clear error (never a panic), and a parsed trunk goes through the same checks the handler runs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tandem_controlplane::api::{
    acd, acd_stats, contact_centre, directory, monitor, parse_json, records, tenants, webhooks,
    ListParams,
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_json::<tenants::LoginRequest>(data);
    let _ = parse_json::<tenants::NewTenant>(data);
    let _ = parse_json::<tenants::TenantPatch>(data);
    let _ = parse_json::<tenants::NewUser>(data);
    let _ = parse_json::<tenants::UserPatch>(data);
    let _ = parse_json::<tenants::NewToken>(data);
    let _ = parse_json::<directory::NewAccount>(data);
    let _ = parse_json::<directory::AccountPatch>(data);
    let _ = parse_json::<directory::NewRoute>(data);
    let _ = parse_json::<directory::RoutePatch>(data);
    let _ = parse_json::<directory::TrunkPatch>(data);
    let _ = parse_json::<webhooks::NewWebhook>(data);
    let _ = parse_json::<webhooks::WebhookPatch>(data);
    let _ = parse_json::<contact_centre::NewSkill>(data);
    let _ = parse_json::<contact_centre::SkillPatch>(data);
    let _ = parse_json::<contact_centre::NewQueue>(data);
    let _ = parse_json::<contact_centre::QueuePatch>(data);
    let _ = parse_json::<contact_centre::NewAgent>(data);
    let _ = parse_json::<contact_centre::AgentPatch>(data);
    let _ = parse_json::<contact_centre::MembershipBody>(data);
    let _ = parse_json::<tandem_controlplane::sip::queues::AgentAction>(data);
    let _ = parse_json::<acd::MoveCaller>(data);
    let _ = parse_json::<acd::CallerPriority>(data);
    let _ = parse_json::<monitor::StartMonitor>(data);
    let _ = parse_json::<monitor::ChangeMonitor>(data);
    if let Ok(t) = parse_json::<directory::NewTrunk>(data) {
        let _ = directory::check_new_trunk(t);
    }
    // Query strings of the list and search endpoints.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(q) = serde_urlencoded::from_str::<ListParams>(text) {
            let _ = q.page(&[("created", "created_ms"), ("name", "name")]);
        }
        let _ = serde_urlencoded::from_str::<records::CallQuery>(text);
        let _ = serde_urlencoded::from_str::<acd::QueueEventQuery>(text);
        let _ = serde_urlencoded::from_str::<acd_stats::StatsQuery>(text);
    }
});
