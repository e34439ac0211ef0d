//! `compose.yaml` is a valid Compose file (checked against the Compose JSON schema and by
//! the Compose CLI's `config`, neither of which needs a Docker engine) and wires the suite
//! the way the README documents.

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
fn compose_cli_accepts_the_file() {
    // `docker compose` (v2 plugin) where Docker is installed, else the standalone
    // `docker-compose` (installed by scripts/test.sh).
    let attempts: [(&str, &[&str]); 2] = [
        ("docker", &["compose", "-f", "compose.yaml", "config", "-q"]),
        ("docker-compose", &["-f", "compose.yaml", "config", "-q"]),
    ];
    let root = repo_file("");
    let mut tried = Vec::new();
    for (program, args) in attempts {
        match std::process::Command::new(program)
            .args(args)
            .current_dir(&root)
            .output()
        {
            Ok(out) if out.status.success() => return,
            Ok(out) => tried.push(format!(
                "{program}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => tried.push(format!("{program}: {e}")),
        }
    }
    panic!(
        "no Compose CLI accepted compose.yaml:\n{}",
        tried.join("\n")
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
