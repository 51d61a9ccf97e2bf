//! The source layout the README promises: the top-level modules of `src/` import each other
//! without a cycle, and no sibling files of a folder (its `mod.rs` or parent file aside, which
//! declares and re-exports them) import each other in a circle. Read from the source text
//! (`crate::...` and `super::...` paths outside comment lines and test modules; names the crate
//! root re-exports count as their module's), as a reviewer would check it. A form the reading
//! does not follow (nested braces, `super::super::`) fails the test rather than pass unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `api::client`, `cache` (for `cache/mod.rs`), ...
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments and its `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file's code names: `crate::a::b::C`, `crate::a::{b, c::D}` (one level of
/// braces) and `super::b` (resolved against `module`).
fn referenced(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let path_at = |rest: &str| -> Vec<String> {
        let mut parts = Vec::new();
        let mut rest = rest;
        loop {
            let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            parts.push(rest[..end].to_string());
            match rest[end..].strip_prefix("::") {
                Some(next) if next.starts_with(ident) => rest = next,
                _ => break,
            }
        }
        parts
    };
    let parent = &module[..module.len().saturating_sub(1)];
    let mut found = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        for (at, _) in code.match_indices(prefix) {
            if prefix == "super::" && code[..at].ends_with("::") {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            assert!(
                !rest.starts_with("super::"),
                "{}: `super::super::` is not read by this test",
                module.join("::")
            );
            let mut head = base.clone();
            let path = path_at(rest);
            let after = &rest[path.join("::").len()..];
            head.extend(path.iter().cloned());
            let group = match after.strip_prefix("::{") {
                Some(group) => group,
                None if path.is_empty() => after.strip_prefix('{').unwrap_or(""),
                None => {
                    found.push(head);
                    continue;
                }
            };
            let group = &group[..group.find('}').unwrap_or(group.len())];
            assert!(
                !group.contains('{'),
                "{}: nested braces in an import are not read by this test",
                module.join("::")
            );
            for item in group.split(',') {
                let mut path = head.clone();
                path.extend(path_at(item.trim()));
                found.push(path);
            }
        }
    }
    found
}

/// The strongly connected components of more than one node.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju, on a graph of a few dozen nodes.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(node.to_string()) {
            return;
        }
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, seen, out);
        }
        out.push(node.to_string());
    }
    let nodes: BTreeSet<String> = edges
        .iter()
        .flat_map(|(a, bs)| std::iter::once(a.clone()).chain(bs.iter().cloned()))
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for node in &nodes {
        visit(node, edges, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, bs) in edges {
        for b in bs {
            reversed.entry(b.clone()).or_default().insert(a.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut components = Vec::new();
    for node in order.iter().rev() {
        let mut component = Vec::new();
        visit(node, &reversed, &mut seen, &mut component);
        if component.len() > 1 {
            components.push(component);
        }
    }
    components
}

#[test]
fn no_module_reaches_back_up_and_no_folder_imports_itself_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|path| (module_of(path.strip_prefix(&src).unwrap()), path.clone()))
        .collect();
    // `crate::Error`, `crate::Client`...: the module a name the crate root re-exports lives in.
    let lib = code(&std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs"));
    let mut root_names: BTreeMap<String, String> = BTreeMap::new();
    for line in lib.lines() {
        let Some(used) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let used = used.trim_end_matches(';');
        let used = used.strip_prefix("crate::").unwrap_or(used);
        let module = used.split("::").next().unwrap_or_default().to_string();
        let names = match used.find('{') {
            Some(at) => used[at + 1..].trim_end_matches('}').to_string(),
            None => used.rsplit("::").next().unwrap_or_default().to_string(),
        };
        for name in names.split(',') {
            root_names.insert(name.trim().to_string(), module.clone());
        }
    }
    assert!(
        root_names.get("Error").is_some_and(|m| m == "error"),
        "{root_names:?}"
    );
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &modules {
        if matches!(module.as_slice(), [root] if root == "lib" || root == "main") {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a source file");
        for mut target in referenced(&code(&text), module) {
            if let Some(owner) = target.first().and_then(|name| root_names.get(name)) {
                target.insert(0, owner.clone());
            }
            // The longest prefix of the path that is a file of the crate (none: an item of the
            // crate root itself).
            let Some(file) = (1..=target.len())
                .rev()
                .map(|n| &target[..n])
                .find(|prefix| modules.contains_key(*prefix))
            else {
                continue;
            };
            if file[0] != module[0] {
                top.entry(module[0].clone())
                    .or_default()
                    .insert(file[0].clone());
            }
            let same_folder =
                file.len() == module.len() && file[..file.len() - 1] == module[..module.len() - 1];
            if same_folder && file != module.as_slice() {
                siblings
                    .entry(module.join("::"))
                    .or_default()
                    .insert(file.join("::"));
            }
        }
    }
    // The reading finds imports, and the check finds a circle where there is one.
    assert!(
        top.values().map(BTreeSet::len).sum::<usize>() > 20,
        "the reading found the modules' imports: {top:?}"
    );
    let mut circle = top.clone();
    circle
        .entry("vendor".into())
        .or_default()
        .insert("cache".into());
    assert!(!cycles(&circle).is_empty());
    assert_eq!(cycles(&top), Vec::<Vec<String>>::new(), "{top:#?}");
    assert_eq!(
        cycles(&siblings),
        Vec::<Vec<String>>::new(),
        "{siblings:#?}"
    );
}

#[test]
fn the_send_loop_reads_in_a_few_screens() {
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/client.rs");
    let lines = std::fs::read_to_string(client).unwrap().lines().count();
    assert!(lines < 600, "src/api/client.rs has {lines} lines");
}
