//! The rotation's decisions and settings, without AWS.

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn record(state: &str, rotated_at_ms: u64, lease_until_ms: u64) -> Record {
    Record {
        v: RECORD_VERSION,
        generation: 4,
        state: state.to_owned(),
        by: "web.1/7".to_owned(),
        lease_until_ms,
        rotated_at_ms,
        ..Record::default()
    }
}

#[test]
fn the_first_rotation_is_due_at_once() {
    assert_eq!(decide(None, 0, HOUR), Decision::Rotate);
}

#[test]
fn a_set_younger_than_the_interval_waits_for_it() {
    let r = record("done", 1_000, 0);
    assert_eq!(
        decide(Some(&r), 1_000 + 3_599_999, HOUR),
        Decision::Wait(Rotated::NotDue {
            next_at: at(1_000 + 3_600_000)
        })
    );
    assert_eq!(decide(Some(&r), 1_000 + 3_600_000, HOUR), Decision::Rotate);
}

#[test]
fn a_claim_holds_for_its_lease_then_is_taken_over() {
    let r = record("rotating", 0, 50_000);
    assert_eq!(
        decide(Some(&r), 49_999, HOUR),
        Decision::Wait(Rotated::Busy {
            by: "web.1/7".to_owned(),
            until: at(50_000)
        })
    );
    assert_eq!(decide(Some(&r), 50_000, HOUR), Decision::Rotate);
}

#[test]
fn the_default_lifetime_is_twice_the_interval_within_sts_bounds() {
    let r = |i: u64| {
        Rotation::new("arn:aws:iam::1:role/r", "app", "t").interval(Duration::from_secs(i))
    };
    assert_eq!(r(6 * 3600).lifetime_of(), 12 * HOUR);
    assert_eq!(r(10 * 3600).lifetime_of(), 12 * HOUR);
    assert_eq!(r(1).lifetime_of(), MIN_LIFETIME);
    assert!(r(6 * 3600).validate().is_ok());
    assert!(r(1).validate().is_ok());
}

#[test]
fn settings_that_cannot_work_say_what_to_change() {
    let base = Rotation::new("arn:aws:iam::1:role/r", "app", "t");
    let err = |r: Rotation| r.validate().unwrap_err().to_string();
    assert!(err(base.clone().interval(12 * HOUR)).contains("must exceed the rotation interval"));
    assert!(err(base.clone().lifetime(Duration::from_secs(60))).contains("900 s to 43200 s"));
    assert!(err(Rotation::new("my-role", "app", "t")).contains("not a role ARN"));
}

#[test]
fn the_session_policy_reaches_the_bucket_only_and_not_the_engine_state() {
    let p = session_policy("b1", "ld/engine/");
    let statements = p["Statement"].as_array().unwrap();
    assert_eq!(statements[0]["Resource"], "arn:aws:s3:::b1/*");
    assert_eq!(statements[1]["Resource"], "arn:aws:s3:::b1");
    assert_eq!(statements[2]["Effect"], "Deny");
    assert_eq!(statements[2]["Resource"], "arn:aws:s3:::b1/ld/engine/*");
    // STS limits a session policy to 2048 characters, packed.
    assert!(p.to_string().len() < 2048);
}
