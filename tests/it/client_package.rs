//! The browser client library as a package a web app imports: `web/package.json`, the
//! TypeScript declarations checked by `tsc` against a strict example (`tests/client/`), and the
//! library itself parsing as a module. `tsc` is `tests/browser`'s pinned `typescript`
//! (`npm ci` there, as `scripts/test` does).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let shown = format!("{cmd:?}");
    let out = cmd
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_typescript_example_checks_against_the_declarations() {
    let tsc = root().join("tests/browser/node_modules/.bin/tsc");
    assert!(
        tsc.exists(),
        "{} is missing: run `npm ci` in tests/browser (scripts/test does)",
        tsc.display()
    );
    let (ok, out) = run(Command::new(&tsc).args(["-p", "tests/client/tsconfig.json", "--noEmit"]));
    assert!(ok, "tsc found errors in tests/client/example.ts:\n{out}");
}

#[test]
fn the_package_is_an_es_module_without_dependencies() {
    let text = std::fs::read_to_string(root().join("web/package.json")).expect("web/package.json");
    let pkg: serde_json::Value = serde_json::from_str(&text).expect("web/package.json is JSON");
    assert_eq!(pkg["type"], "module", "{pkg}");
    for deps in ["dependencies", "peerDependencies", "optionalDependencies"] {
        assert!(
            pkg.get(deps).is_none(),
            "the package must have no {deps}: {pkg}"
        );
    }
    assert!(pkg["name"].as_str().is_some_and(|n| !n.is_empty()), "{pkg}");
    // What main, types and exports name must be files of the package.
    let dot = &pkg["exports"]["."];
    for (what, file) in [
        ("main", &pkg["main"]),
        ("types", &pkg["types"]),
        ("exports types", &dot["types"]),
        ("exports default", &dot["default"]),
    ] {
        let file = file.as_str().unwrap_or_else(|| panic!("no {what}: {pkg}"));
        assert!(
            root().join("web").join(file).is_file(),
            "{what} names {file}, which web/ lacks"
        );
    }
    assert_eq!(dot["default"], pkg["main"], "{pkg}");
    assert_eq!(dot["types"], pkg["types"], "{pkg}");
    let files: Vec<&str> = pkg["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for f in ["gateway-client.js", "gateway-client.d.ts"] {
        assert!(files.contains(&f), "files lacks {f}: {pkg}");
    }
    // The tsc check below is only worth something if the example imports the package by its name
    // (resolved through package.json, as in an app) and keeps a wrong use that must fail.
    let example = std::fs::read_to_string(root().join("tests/client/example.ts"))
        .expect("tests/client/example.ts");
    let name = pkg["name"].as_str().unwrap_or_default();
    assert!(
        example.contains(&format!("from '{name}'")),
        "the example imports {name}"
    );
    assert!(
        example.contains("// @ts-expect-error"),
        "the example keeps a wrong use"
    );
}

#[test]
fn the_library_parses_and_the_declarations_cover_its_public_methods() {
    let (ok, out) = run(Command::new("node").args(["--check", "web/gateway-client.js"]));
    assert!(ok, "node --check web/gateway-client.js:\n{out}");

    let js = std::fs::read_to_string(root().join("web/gateway-client.js")).expect("library");
    let dts = std::fs::read_to_string(root().join("web/gateway-client.d.ts")).expect("d.ts");
    let methods = public_methods(&js);
    assert!(methods.len() >= 15, "found only {methods:?} in the library");
    for m in &methods {
        assert!(
            dts.contains(&format!(" {m}(")) || dts.contains(&format!("readonly {m}:")),
            "gateway-client.d.ts does not declare {m}"
        );
    }
    // Every event the library dispatches is in the declarations' event map.
    for line in js.lines() {
        for piece in line.split("_emit('").skip(1) {
            let event = piece.split('\'').next().unwrap_or_default();
            assert!(
                dts.contains(&format!("  {event}: CustomEvent<")),
                "event {event} is dispatched but not in GatewayClientEventMap"
            );
        }
    }
}

/// The class's public methods and getters: two-space-indented `name(` or `get name(` lines,
/// without the `_` of the private ones.
fn public_methods(js: &str) -> Vec<String> {
    let class = js
        .split("export class GatewayClient")
        .nth(1)
        .expect("the GatewayClient class");
    class
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .map(|l| {
            l.strip_prefix("async ")
                .or(l.strip_prefix("get "))
                .unwrap_or(l)
        })
        .filter_map(|l| l.split_once('(').map(|(name, _)| name))
        .filter(|n| {
            !n.is_empty() && !n.starts_with('_') && n.chars().all(|c| c.is_ascii_alphanumeric())
        })
        .filter(|n| *n != "constructor")
        .map(str::to_string)
        .collect()
}
