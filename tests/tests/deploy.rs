//! The gateway accepts the config and policy files that `deploy/` ships (the validators in
//! `scripts/validate-deploy` check the manifests around them, not what the gateway reads).

use std::path::Path;
use std::process::Command;

use corral_tests::gateway::binary;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// `gateway check` on `config` with the policy files of `policy_dirs` merged into one
/// directory, as a ConfigMap generator merges them: exit code and output.
fn gateway_check(config: &Path, policy_dirs: &[&str]) -> (i32, String) {
    let policies = tempfile::tempdir().expect("temp dir");
    for dir in policy_dirs {
        for entry in std::fs::read_dir(Path::new(DEPLOY).join(dir)).expect("policy dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("file name");
            std::fs::copy(&path, policies.path().join(name)).expect("copy policy");
        }
    }
    let out = Command::new(binary("gateway"))
        .args(["check", "--config"])
        .arg(config)
        .env("POLICIES_DIR", policies.path())
        .env_remove("OLLAMA_BASE_URL")
        .env_remove("GATEWAY_LISTEN")
        .output()
        .expect("run gateway check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_kubernetes_config_and_policies_pass_gateway_check() {
    let config = Path::new(DEPLOY).join("k8s/base/gateway.toml");
    let (code, out) = gateway_check(&config, &["k8s/base/policies"]);
    assert_eq!(code, 0, "deploy/k8s/base: {out}");
    // The example overlay adds its org to the base's default policy.
    let (code, out) = gateway_check(
        &config,
        &["k8s/base/policies", "k8s/overlays/example/policies"],
    );
    assert_eq!(code, 0, "deploy/k8s/overlays/example: {out}");
}
