//! examples/mesh/ holds what `make manifests` renders from examples/policy.json; this test
//! renders them again and fails on any difference, so they cannot drift from the CLI or the
//! demo policy. To update them: `make manifests`.

// Test code: a failed step should fail the test loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-guard");

/// Each committed manifest and the `render` arguments of its Makefile recipe.
const MANIFESTS: &[(&str, &[&str])] = &[
    (
        "istio.yaml",
        &["--format", "istio", "--selector", "app=mcp-server"],
    ),
    (
        "istio-wasmplugin.yaml",
        &[
            "--format",
            "istio-wasmplugin",
            "--selector",
            "app=mcp-server",
        ],
    ),
    (
        "envoy-gateway.yaml",
        &["--format", "envoy-gateway", "--target-ref", "Gateway/eg"],
    ),
    (
        "istio-otel.yaml",
        &[
            "--format",
            "istio",
            "--selector",
            "app=mcp-server",
            "--otel-collector",
            "$(OTEL_COLLECTOR)",
        ],
    ),
    (
        "envoy-gateway-otel.yaml",
        &[
            "--format",
            "envoy-gateway",
            "--target-ref",
            "Gateway/eg",
            "--otel-collector",
            "$(OTEL_COLLECTOR)",
        ],
    ),
];

/// The Makefile's `OTEL_COLLECTOR`, which the recipes above name as `$(OTEL_COLLECTOR)`.
const OTEL_COLLECTOR: &str = "otel-collector.observability.svc.cluster.local:4317";

#[test]
fn committed_mesh_manifests_are_what_the_cli_renders() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let makefile = std::fs::read_to_string(repo.join("Makefile")).unwrap();
    // Every file there is one of these renderings (none left behind by a removed one).
    let mut present: Vec<String> = std::fs::read_dir(repo.join("examples/mesh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut expected: Vec<String> = MANIFESTS.iter().map(|(f, _)| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(present, expected, "examples/mesh/ holds other files");
    for (file, args) in MANIFESTS {
        // The recipe and this test must agree on the arguments.
        let recipe = format!(
            "$(CLI) render $(DEMO_POLICY) {} --out $(MESH_DIR)/{file}",
            args.join(" ")
        );
        assert!(makefile.contains(&recipe), "Makefile has no `{recipe}`");
        assert!(makefile.contains(&format!("OTEL_COLLECTOR := {OTEL_COLLECTOR}\n")));
        let args: Vec<&str> = args
            .iter()
            .map(|a| {
                if *a == "$(OTEL_COLLECTOR)" {
                    OTEL_COLLECTOR
                } else {
                    a
                }
            })
            .collect();

        let out = Command::new(BIN)
            .current_dir(&repo)
            .args(["render", "examples/policy.json"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = repo.join("examples/mesh").join(file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make manifests`)", path.display()));
        assert!(
            committed == String::from_utf8_lossy(&out.stdout),
            "{} differs from what `mcp-guard render` gives now: run `make manifests`",
            path.display()
        );
    }
}
