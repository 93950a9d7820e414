//! `cargo xtask tidy`: the repository's rules that no compiler checks, checked on the files
//! (as rust-analyzer's tidy test does): the crate edges of `docs/ARCHITECTURE.md`, a `//!`
//! line opening every Rust file, no test marked `should_panic` or `ignore`, and `anyhow` only
//! in the binary crates. The test below runs it, so `cargo test --workspace` enforces it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The attributes that skip a test or let it pass by panicking, spelled in two pieces so that
/// this file does not hold them itself.
const SKIP_MARKS: [&str; 2] = [concat!("#[", "should_panic"), concat!("#[", "ignore")];

/// Crates that may use `anyhow` (binaries; libraries return typed errors).
const ANYHOW_ALLOWED: &[&str] = &["deepsim-cli", "xtask"];

/// Checks the repository at `root`; every violation, one per line.
pub fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let manifests = manifests(root)?;
    let documented =
        documented_edges(&std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))?)?;
    for (name, (path, text)) in &manifests {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
        let deps = table.get("dependencies").and_then(toml::Value::as_table);
        let ours: Vec<String> = deps
            .map(|d| d.keys().filter(|k| k.starts_with("deepsim-")).cloned().collect())
            .unwrap_or_default();
        match documented.get(name) {
            None => problems.push(format!(
                "{}: crate {name} is not in the edges list of docs/ARCHITECTURE.md",
                path.display()
            )),
            Some(listed) if *listed != ours => problems.push(format!(
                "{}: {name} depends on [{}], docs/ARCHITECTURE.md lists [{}]",
                path.display(),
                ours.join(", "),
                listed.join(", ")
            )),
            Some(_) => {}
        }
        let uses_anyhow = deps.is_some_and(|d| d.contains_key("anyhow"));
        if uses_anyhow && !ANYHOW_ALLOWED.contains(&name.as_str()) {
            problems.push(format!(
                "{}: {name} is a library and depends on anyhow (return a typed error)",
                path.display()
            ));
        }
    }
    for name in documented.keys().filter(|n| !manifests.contains_key(*n)) {
        problems.push(format!("docs/ARCHITECTURE.md lists {name}, which has no Cargo.toml"));
    }
    for file in rust_files(root)? {
        let text = std::fs::read_to_string(&file)?;
        let shown = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{shown}: no `//!` line says what the file is for"));
        }
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if SKIP_MARKS.iter().any(|m| code.starts_with(m)) {
                problems.push(format!(
                    "{shown}:{}: {} (a test asserts its error, and runs)",
                    i + 1,
                    code
                ));
            }
        }
    }
    Ok(problems)
}

/// `name → (path, text)` of every workspace member's `Cargo.toml`.
fn manifests(root: &Path) -> Result<BTreeMap<String, (PathBuf, String)>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.push(root.join("xtask"));
    let mut out = BTreeMap::new();
    for dir in dirs {
        let path = dir.join("Cargo.toml");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = table
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
            .ok_or_else(|| format!("{}: no package.name", path.display()))?
            .to_owned();
        out.insert(name, (path, text));
    }
    Ok(out)
}

/// The ```` ```text edges ```` block of ARCHITECTURE.md: `crate: dependency dependency …`.
fn documented_edges(doc: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let start =
        doc.find("```text edges\n").ok_or("docs/ARCHITECTURE.md: no ```text edges block")?;
    let block = &doc[start + "```text edges\n".len()..];
    let block =
        &block[..block.find("```").ok_or("docs/ARCHITECTURE.md: edges block not closed")?];
    let mut edges = BTreeMap::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let (name, deps) =
            line.split_once(':').ok_or_else(|| format!("docs/ARCHITECTURE.md edges: `{line}`"))?;
        let mut deps: Vec<String> = deps.split_whitespace().map(str::to_owned).collect();
        deps.sort();
        edges.insert(name.trim().to_owned(), deps);
    }
    Ok(edges)
}

/// The Rust files of the workspace's crates (sources, tests, benches, examples, fuzz targets).
fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("crates"), root.join("xtask")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs the task: prints every violation and fails if there is one.
pub fn run() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let problems = check(&root)?;
    if problems.is_empty() {
        println!("tidy: the crate edges, `//!` lines, tests and anyhow are as the rules say");
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    Err(format!("tidy: {} problem(s)", problems.len()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_is_tidy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let problems = check(&root).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn each_rule_catches_its_violation() {
        let root = std::env::temp_dir().join(format!("deepsim-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["crates/deepsim-a/src", "crates/deepsim-b/src", "xtask/src", "docs"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let manifest = |name: &str, deps: &str| {
            format!("[package]\nname = \"{name}\"\n\n[dependencies]\n{deps}\n")
        };
        std::fs::write(root.join("crates/deepsim-a/Cargo.toml"), manifest("deepsim-a", ""))
            .unwrap();
        std::fs::write(
            root.join("crates/deepsim-b/Cargo.toml"),
            manifest("deepsim-b", "deepsim-a = { path = \"../deepsim-a\" }\nanyhow = \"1\""),
        )
        .unwrap();
        std::fs::write(root.join("xtask/Cargo.toml"), manifest("xtask", "anyhow = \"1\"")).unwrap();
        std::fs::write(root.join("crates/deepsim-a/src/lib.rs"), "//! A.\n").unwrap();
        std::fs::write(
            root.join("crates/deepsim-b/src/lib.rs"),
            format!("/// no module line\n#[test]\n    {}]\nfn t() {{}}\n", SKIP_MARKS[0]),
        )
        .unwrap();
        std::fs::write(
            root.join("xtask/src/main.rs"),
            format!("//! X.\n{}]\nfn t() {{}}\n", SKIP_MARKS[1]),
        )
        .unwrap();
        std::fs::write(
            root.join("docs/ARCHITECTURE.md"),
            "# A\n\n```text edges\ndeepsim-a:\ndeepsim-b:\nxtask:\ndeepsim-c: deepsim-a\n```\n",
        )
        .unwrap();
        let problems = check(&root).unwrap();
        let all = problems.join("\n");
        assert!(
            all.contains("deepsim-b depends on [deepsim-a], docs/ARCHITECTURE.md lists []"),
            "{all}"
        );
        assert!(all.contains("deepsim-b is a library and depends on anyhow"), "{all}");
        assert!(!all.contains("xtask is a library"), "{all}");
        assert!(all.contains("lists deepsim-c, which has no Cargo.toml"), "{all}");
        assert!(all.contains("crates/deepsim-b/src/lib.rs: no `//!` line"), "{all}");
        let at = |place: &str, mark: &str| format!("{place}: {mark}]");
        assert!(all.contains(&at("crates/deepsim-b/src/lib.rs:3", SKIP_MARKS[0])), "{all}");
        assert!(all.contains(&at("xtask/src/main.rs:2", SKIP_MARKS[1])), "{all}");
        assert_eq!(problems.len(), 6, "{all}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
