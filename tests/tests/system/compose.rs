//! `compose.yaml` is a valid Compose file (checked against the Compose JSON schema, since
//! CI has no Docker engine) and wires the suite the way the README documents.

use std::path::Path;

fn repo_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn compose_file_validates_against_the_compose_schema() {
    let script = r#"
import json, sys, yaml, jsonschema
spec = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open(sys.argv[2]))
jsonschema.Draft201909Validator(spec).validate(doc)
print("valid")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(repo_file("tests/fixtures/compose-spec.json"))
        .arg(repo_file("compose.yaml"))
        .output()
        .expect("python3 with pyyaml and jsonschema (installed by scripts/test.sh)");
    assert!(
        out.status.success(),
        "compose.yaml is not a valid Compose file:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_file_wires_every_service_without_publishing_internal_ports() {
    let text = std::fs::read_to_string(repo_file("compose.yaml")).expect("compose.yaml");
    assert!(
        !text.lines().any(|l| l.starts_with("version:")),
        "no version key"
    );
    for service in [
        "postgres:",
        "storage-service:",
        "sync-0:",
        "sync-1:",
        "search-service:",
        "gateway:",
    ] {
        assert!(
            text.lines().any(|l| l.trim_end() == format!("  {service}")),
            "service {service}"
        );
    }
    assert!(text.contains("condition: service_healthy"));
    assert!(text.contains("replicas: 2"));
    // Only the gateway publishes a port.
    assert_eq!(text.matches("ports:").count(), 1);
    assert!(text.contains("\"8080:8080\""));
    assert!(text.contains("TOPGUN_INTERNAL_TOKEN"));
}
