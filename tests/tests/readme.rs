//! Keeps the README true: the configuration table lists every variable the binaries read with
//! its real default, and CI runs the README's test command.

use buyonce_shared::config::vars;

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn the_configuration_table_lists_every_variable_with_its_default() {
    let readme = repo_file("README.md");
    let mut problems = Vec::new();
    for spec in vars::ALL {
        let default = spec
            .default
            .map(|d| format!("`{d}`"))
            .unwrap_or_else(|| "—".into());
        let row = format!("| `{}` | {default} |", spec.name);
        if !readme.contains(&row) {
            problems.push(format!(
                "missing or wrong row for {}: expected it to start with {row}",
                spec.name
            ));
        }
    }
    for line in readme
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains("` | "))
    {
        let name = line
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or_default();
        let looks_like_var = name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && name.contains('_');
        if looks_like_var && !vars::ALL.iter().any(|v| v.name == name) {
            problems.push(format!("README documents {name}, which no binary reads"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn ci_runs_the_readme_test_command_and_the_readme_shows_the_quickstart() {
    let readme = repo_file("README.md");
    let ci = repo_file(".ci/run");
    assert!(
        readme.contains("cargo test --workspace"),
        "README quickstart lost its test command"
    );
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test --workspace"),
        ".ci/run must run the README's test command"
    );
    // The demo builds in the tests' profile, so the two commands share one build.
    assert!(readme.contains("cargo run -p buyonce-tests --bin buyonce-demo"));
    assert!(!readme.contains("cargo run --release -p buyonce-tests --bin buyonce-demo"));
}
