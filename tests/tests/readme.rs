//! The README held to the code: its "Configs shipped" paragraph names every file of `configs/`, its config defaults
//! table equals `TrainConfig::default()` key by key, and its test prerequisites name every package
//! `scripts/test.sh` installs with apt and pip and the compose plugin it downloads.

use learner::config::TrainConfig;
use std::collections::{BTreeMap, BTreeSet};

/// Marks the config defaults table in README.md (the line before the table) ...
const DEFAULTS_START: &str = "<!-- config defaults";
/// ... and the line after it.
const DEFAULTS_END: &str = "<!-- /config defaults -->";
/// Marks the paragraph of test prerequisites in README.md (the line before it).
const PREREQUISITES: &str = "<!-- test prerequisites";

/// A file of the workspace, as text.
fn read(relative: &str) -> String {
    let path = tests::workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The lines of `text` from the first that starts with `start` (included when `inclusive`) up to the next blank
/// line, joined with newlines.
fn paragraph(text: &str, start: &str, inclusive: bool) -> String {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(start));
    let first = lines.next().unwrap_or_else(|| panic!("README.md has no line starting {start:?}"));
    inclusive
        .then_some(first)
        .into_iter()
        .chain(lines.take_while(|l| !l.trim().is_empty()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `text` holds in backticks (`a` and `b` of "x `a` y `b`").
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Panics with every failure, one per line, when there is any.
#[track_caller]
fn assert_none(failures: &[String], what: &str) {
    assert!(failures.is_empty(), "{what}:\n  {}", failures.join("\n  "));
}

#[test]
fn readme_lists_every_shipped_config() {
    let dir = tests::workspace_root().join("configs");
    let shipped: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    assert!(!shipped.is_empty(), "no configs in {}", dir.display());
    let listed_text = paragraph(&read("README.md"), "Configs shipped:", true);
    let listed: BTreeSet<String> =
        backticked(&listed_text).into_iter().filter(|n| n.ends_with(".toml")).map(str::to_owned).collect();
    let mut failures: Vec<String> = shipped
        .difference(&listed)
        .map(|name| format!("configs/{name} is not named (as `{name}`) in README.md's \"Configs shipped\" paragraph"))
        .collect();
    failures.extend(
        listed.difference(&shipped).map(|name| {
            format!("README.md's \"Configs shipped\" paragraph names `{name}`, which configs/ does not hold")
        }),
    );
    assert_none(&failures, "README.md's config list differs from configs/");
}

/// `value`'s tables flattened to dotted keys (`ppo.learning_rate`); arrays and scalars are leaves.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(table) => {
            for (key, inner) in table {
                let dotted = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&dotted, inner, out);
            }
        }
        leaf => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

/// The README's defaults table: key -> the default as written (a TOML value), or `None` where it says `none`.
fn readme_defaults(readme: &str) -> BTreeMap<String, Option<String>> {
    let start = readme.find(DEFAULTS_START).unwrap_or_else(|| panic!("README.md has no {DEFAULTS_START:?} marker"));
    let end = readme[start..].find(DEFAULTS_END).unwrap_or_else(|| panic!("README.md has no {DEFAULTS_END:?} marker"));
    let mut rows = BTreeMap::new();
    for line in readme[start..start + end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(key), Some(default)) = (cells.get(1), cells.get(2)) else {
            panic!("README.md's defaults table: row {line:?} has no default column");
        };
        let key = key.trim_matches('`').to_owned();
        let default = match *default {
            "none" => None,
            d => Some(
                d.strip_prefix('`')
                    .and_then(|d| d.strip_suffix('`'))
                    .unwrap_or_else(|| {
                        panic!("README.md's defaults table: `{key}`'s default {d:?} is neither `VALUE` nor none")
                    })
                    .to_owned(),
            ),
        };
        assert!(rows.insert(key.clone(), default).is_none(), "README.md's defaults table has `{key}` twice");
    }
    assert!(!rows.is_empty(), "README.md's defaults table has no rows");
    rows
}

/// Why the TOML document `key = value` does not load as `TrainConfig::default()`, if it does not.
fn differs_from_default(dir: &std::path::Path, key: &str, value: &str, default: &TrainConfig) -> Option<String> {
    let path = dir.join(format!("{key}.toml"));
    std::fs::write(&path, format!("{key} = {value}\n"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    match TrainConfig::load(Some(&path), &[]) {
        Ok(loaded) if loaded == *default => None,
        Ok(_) => Some("is not the default".to_owned()),
        Err(e) => Some(format!("does not load ({e})")),
    }
}

#[test]
fn readme_config_defaults_equal_train_config_default() {
    let default = TrainConfig::default();
    // JSON keeps the keys without a default (`null`) that TOML leaves out; the values are compared through TOML.
    let json = serde_json::to_value(&default).expect("TrainConfig serialises to JSON");
    let mut code = BTreeMap::new();
    flatten("", &json, &mut code);
    let readme = readme_defaults(&read("README.md"));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for (key, value) in &code {
        match (readme.get(key), value.is_null()) {
            (None, _) => failures.push(format!("`{key}` (default {value}) is missing from README.md's defaults table")),
            (Some(None), true) => {}
            (Some(None), false) => failures.push(format!("README.md says `{key}` has no default; it is {value}")),
            (Some(Some(written)), true) => {
                failures.push(format!("README.md gives `{key}` the default `{written}`; it has none (say none)"))
            }
            (Some(Some(written)), false) => {
                if let Some(why) = differs_from_default(dir.path(), key, written, &default) {
                    failures.push(format!("README.md's default for `{key}`, `{written}`, {why}: it is {value}"));
                }
            }
        }
    }
    failures.extend(
        readme
            .keys()
            .filter(|key| !code.contains_key(*key))
            .map(|key| format!("README.md's defaults table has `{key}`, which is not a key of TrainConfig")),
    );
    assert_none(&failures, "README.md's config defaults table differs from TrainConfig::default()");
}

/// The arguments of every `TOOL install ...` command line of `script` (`apt-get`, `pip`): options and quotes
/// dropped, up to the first shell operator or redirection.
fn installed_by(script: &str, tool: &str) -> Vec<String> {
    let command = format!("{tool} install ");
    let mut names = Vec::new();
    for line in script.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let Some(at) = line.find(&command) else { continue };
        for word in line[at + command.len()..].split_whitespace() {
            if word.starts_with(['>', '<', '&', '|', ';']) || word.starts_with("2>") {
                break;
            }
            if !word.starts_with('-') {
                names.push(word.trim_matches(['"', '\'']).to_owned());
            }
        }
    }
    names
}

/// A pip requirement's package (with extras), without its version constraint: `numpy==$V` -> `numpy`.
fn requirement_name(requirement: &str) -> &str {
    requirement.split(['=', '<', '>', '!', '~']).next().unwrap_or(requirement)
}

/// The value of `NAME="value"` in `script`.
fn shell_variable<'a>(script: &'a str, name: &str) -> &'a str {
    let assignment = format!("{name}=\"");
    script
        .lines()
        .find_map(|l| l.trim().strip_prefix(&assignment)?.strip_suffix('"'))
        .unwrap_or_else(|| panic!("scripts/test.sh sets no {name}"))
}

#[test]
fn readme_prerequisites_name_what_test_sh_installs() {
    let script = read("scripts/test.sh");
    let apt = installed_by(&script, "apt-get");
    let pip: Vec<String> = installed_by(&script, "pip").iter().map(|r| requirement_name(r).to_owned()).collect();
    assert!(!apt.is_empty(), "no `apt-get install` packages found in scripts/test.sh");
    assert!(!pip.is_empty(), "no `pip install` packages found in scripts/test.sh");
    let url = script
        .lines()
        .filter(|l| l.trim().starts_with("curl "))
        .find_map(|l| l.split(['"', ' ']).find(|w| w.starts_with("http://") || w.starts_with("https://")))
        .expect("scripts/test.sh downloads nothing with curl");
    let host = url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or(url);
    let download =
        [("the download's host", host), ("the downloaded package", shell_variable(&script, "COMPOSE_V2_DEB"))];

    let text = paragraph(&read("README.md"), PREREQUISITES, false);
    let named: BTreeSet<&str> = backticked(&text).into_iter().collect();
    let wanted = apt
        .iter()
        .map(|p| ("an apt-get install package", p.as_str()))
        .chain(pip.iter().map(|p| ("a pip install package", p.as_str())))
        .chain(download);
    let failures: Vec<String> = wanted
        .filter(|(_, name)| !named.contains(name))
        .map(|(what, name)| format!("README.md's test prerequisites do not name `{name}`, {what} of scripts/test.sh"))
        .collect();
    assert_none(&failures, "README.md's test prerequisites differ from scripts/test.sh");
}
