use super::*;
use crate::message::Envelope;
use crate::seal::Protection;

fn copy(sender: &str, to: &[&str]) -> Sealed {
    Sealed {
        envelope: Envelope {
            sender: sender.into(),
            recipients: to.iter().map(|r| r.to_string()).collect(),
            extras: vec![
                ("x-job".into(), "j-1".into()),
                ("x-envid".into(), "e".into()),
            ],
            ..Envelope::default()
        },
        data: b"From: a@x\r\nSubject: \"quoted\"\r\n\r\nbody\r\n".to_vec(),
        protection: Protection::Signed,
        message_id: "id@x".into(),
    }
}

#[test]
fn the_message_is_what_a_pickup_file_carries_after_its_envelope_lines() {
    let c = copy("s@x.org", &["a@y", "b@y"]);
    let body = transmission(&c, &c.envelope.recipients, Flavor::Powermta).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let file = crate::deliver::pickup::pickup_file(&c, &c.envelope.recipients);
    let envelope =
        b"x-sender: s@x.org\r\nx-receiver: a@y\r\nx-receiver: b@y\r\nx-job: j-1\r\nx-envid: e\r\n";
    assert_eq!(
        v["content"]["email_rfc822"].as_str().unwrap().as_bytes(),
        &file[envelope.len()..]
    );
    assert_eq!(v["return_path"], "s@x.org");
    assert_eq!(v["campaign_id"], "j-1");
    assert_eq!(
        v["recipients"],
        serde_json::json!([{"address": {"email": "a@y"}}, {"address": {"email": "b@y"}}])
    );
    assert!(v.get("options").is_none(), "PowerMTA: no option");
}

#[test]
fn options_follow_the_flavor() {
    let c = copy("s@x.org", &["jörg@y"]);
    let r = &c.envelope.recipients;
    let v: serde_json::Value =
        serde_json::from_slice(&transmission(&c, r, Flavor::Powermta).unwrap()).unwrap();
    assert_eq!(v["options"], serde_json::json!({"smtputf8": true}));
    let v: serde_json::Value =
        serde_json::from_slice(&transmission(&c, r, Flavor::Sparkpost).unwrap()).unwrap();
    assert_eq!(
        v["options"],
        serde_json::json!({"open_tracking": false, "click_tracking": false})
    );
}

#[test]
fn bytes_json_cannot_carry_are_refused_for_good() {
    let mut c = copy("s@x.org", &["a@y"]);
    c.data = b"Subject: \xe9t\xe9\r\n\r\nx\r\n".to_vec();
    let e = transmission(&c, &c.envelope.recipients, Flavor::Powermta).unwrap_err();
    assert!(e.is_permanent() && e.to_string().contains("byte 9"), "{e}");
}

#[test]
fn error_replies_give_their_messages_on_one_line() {
    let body = r#"{"errors":[{"message":"invalid\nfield","description":"no recipients"},{"message":"two"}]}"#;
    assert_eq!(error_text(body), "invalid\\nfield: no recipients; two");
    assert_eq!(error_text(""), "(no text)");
    assert_eq!(error_text("<html>busy</html>"), "<html>busy</html>");
}
