//! No module imports in a circle: in every crate of the workspace, no two modules import
//! each other, directly or through a chain of other modules.
//!
//! The check reads the source, not the compiler's view of it. Each crate's modules are the
//! files its root reaches through `mod x;` declarations (`x.rs` or `x/mod.rs`); every `.rs`
//! file under a member's `src/` must belong to one of its crates. A file's imports are its
//! `use` trees and every path in its code that starts with `crate::`, `super::`, `self::`, a
//! child module or a local name for a module. Comments and string literals are skipped.
//!
//! A path is resolved to the module that defines the name: segments are followed while they
//! name modules, then through `pub use` re-exports (explicit, then glob) to where the item
//! is defined. A re-export of a module's own descendant is no edge by itself: that is how a
//! crate root (or a `mod.rs`) lays out its public face, like its `mod` lines. It becomes one
//! when the module's own code uses the name. Code in an inline module (`mod tests { .. }`)
//! counts as its file's; its `super::` is the file itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The workspace's check: it fails while any crate has a circle and prints each one.
#[test]
fn no_module_imports_in_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crates = workspace_crates(root).expect("the workspace's crates and their files can be read");
    let mut report = String::new();
    for krate in &crates {
        let circles = crate_circles(krate).expect("every crate's modules can be found and parsed");
        report.push_str(&circles);
    }
    assert!(
        report.is_empty(),
        "modules import each other in a circle; take the shared names out into a module of their own:\n{report}"
    );
}

/// The facade's layers, lowest first, as ARCHITECTURE.md draws them: each top-level module
/// or folder of `airomem/src` and its floor. A module may import from its own folder or from
/// a lower floor, never from a folder beside it or above it.
const FACADE_LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("layout", 0),
    ("options", 0),
    ("report", 0),
    ("meters", 1),
    ("park", 0),
    ("collections", 0),
    ("execute", 1),
    ("backup", 1),
    ("recover", 2),
    ("snapshot", 2),
    ("write", 3),
    ("read_only", 4),
    ("store", 5),
    ("tool", 6),
    ("testing", 6),
];

/// The facade's imports run only down its layers (or inside one folder), so a new import
/// that runs up fails here even before it closes a circle.
#[test]
fn the_facade_imports_only_from_its_own_folder_or_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crates = workspace_crates(root).expect("the workspace's crates and their files can be read");
    let facade = crates.iter().find(|k| k.root == "airomem/src/lib.rs").expect("the facade is a member");
    let upward = imports_against_layers(facade, "airomem/src/", FACADE_LAYERS).expect("the facade can be read");
    assert!(
        upward.is_empty(),
        "imports that run up or sideways in the facade's layers (see ARCHITECTURE.md):\n{upward}"
    );
}

/// Every import of `krate` whose target is not in its importer's folder and not on a lower
/// layer, as text. A module under `prefix` that `layers` does not place is reported too.
fn imports_against_layers(krate: &Crate, prefix: &str, layers: &[(&str, u32)]) -> Result<String, String> {
    let modules = module_tree(krate)?;
    let room = |file: &str| -> Option<String> {
        let rest = file.strip_prefix(prefix)?;
        let first = rest.split('/').next()?;
        (first != "lib.rs").then(|| first.trim_end_matches(".rs").to_string())
    };
    let floor = |room: &str| layers.iter().find(|(name, _)| *name == room).map(|&(_, floor)| floor);
    let mut out = String::new();
    let mut unplaced = BTreeSet::new();
    for ((from, to), names) in edges(&modules) {
        let (Some(a), Some(b)) = (room(&modules[from].file), room(&modules[to].file)) else { continue };
        if a == b {
            continue;
        }
        match (floor(&a), floor(&b)) {
            (Some(fa), Some(fb)) if fb < fa => {}
            (Some(fa), Some(fb)) => {
                let names = names.iter().cloned().collect::<Vec<_>>().join(", ");
                let _ = writeln!(
                    out,
                    "  {} (layer {fa}) -> {} (layer {fb}): {names}",
                    modules[from].file, modules[to].file
                );
            }
            (None, _) => drop(unplaced.insert(a)),
            (_, None) => drop(unplaced.insert(b)),
        }
    }
    for room in unplaced {
        let _ = writeln!(out, "  `{room}` has no layer: add it to the table");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Finding the crates.

/// One crate: its root file and the source files it may reach, by path from the workspace
/// root (with `/` separators).
struct Crate {
    root: String,
    files: BTreeMap<String, String>,
}

/// Every crate of every workspace member: the library, `main.rs`, `src/bin/` and the
/// `[[bin]]`/`[lib]` paths its Cargo.toml names. Fails when a member's `src/` holds a file
/// no crate of it reaches.
fn workspace_crates(root: &Path) -> Result<Vec<Crate>, String> {
    let manifest = read(&root.join("Cargo.toml"))?;
    let mut members = vec![String::from(".")];
    members.extend(members_of(&manifest)?);
    let mut crates = Vec::new();
    for member in members {
        let dir = if member == "." { root.to_path_buf() } else { root.join(&member) };
        let mut files = BTreeMap::new();
        // A member of examples alone (examples/web) has no `src/`, so no modules.
        if dir.join("src").is_dir() {
            collect_rs(root, &dir.join("src"), &mut files)?;
        }
        let prefix = if member == "." { String::new() } else { format!("{member}/") };
        let mut roots = BTreeSet::new();
        for default in ["src/lib.rs", "src/main.rs"] {
            if files.contains_key(&format!("{prefix}{default}")) {
                roots.insert(format!("{prefix}{default}"));
            }
        }
        for name in files.keys() {
            if let Some(rest) = name.strip_prefix(&format!("{prefix}src/bin/"))
                && (!rest.contains('/') || rest.ends_with("/main.rs") && rest.matches('/').count() == 1)
            {
                roots.insert(name.clone());
            }
        }
        for path in target_paths(&read(&dir.join("Cargo.toml"))?) {
            roots.insert(normalise(&format!("{prefix}{path}")));
        }
        let mut reached = BTreeSet::new();
        for krate_root in roots {
            let krate = Crate { root: krate_root, files: files.clone() };
            reached.extend(module_tree(&krate)?.into_iter().map(|m| m.file));
            crates.push(krate);
        }
        let unreached: Vec<_> = files.keys().filter(|f| !reached.contains(*f)).collect();
        if !unreached.is_empty() {
            return Err(format!("no crate of `{member}` reaches these files with `mod` lines: {unreached:?}"));
        }
    }
    Ok(crates)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `members = [..]` list of the root manifest.
fn members_of(manifest: &str) -> Result<Vec<String>, String> {
    let start = manifest.find("members").ok_or("the root Cargo.toml has no `members`")?;
    let open = manifest[start..].find('[').ok_or("`members` has no list")? + start;
    let close = manifest[open..].find(']').ok_or("`members` has no end")? + open;
    Ok(manifest[open + 1..close]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect())
}

/// The `path`s of a manifest's `[lib]` and `[[bin]]` sections.
fn target_paths(manifest: &str) -> Vec<String> {
    let mut section = "";
    let mut paths = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if matches!(section, "[lib]" | "[[bin]]")
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "path"
        {
            paths.push(value.trim().trim_matches('"').to_string());
        }
    }
    paths
}

/// `a/./b` and `a/x/../b` as `a/b`.
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

fn collect_rs(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| format!("{}: {e}", dir.display()))?.path());
    }
    for path in paths {
        if path.is_dir() {
            collect_rs(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.strip_prefix(root).map_err(|e| e.to_string())?;
            let name = name.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.insert(name, read(&path)?);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading a file: tokens without comments or literals, then its `mod` lines, `use` trees,
// paths in code and the items it defines.

/// The tokens of Rust source: identifiers (and keywords), `::`, `$crate`, single punctuation
/// characters, and `""` for every string literal. Comments, characters and numbers are gone.
fn tokens(src: &str) -> Vec<String> {
    let chars: Vec<char> = src.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
            out.push(String::from("\"\""));
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                // A character escape: past the escaped character, up to the closing quote.
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime or label.
                i += 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' || at(i) == '.' && at(i + 1).is_ascii_digit() {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' || c == '$' && at(i + 1).is_alphabetic() {
            let start = i;
            i += 1;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && (at(i) == '"' || at(i) == '#' && (at(i + 1) == '#' || at(i + 1) == '"')) {
                let mut hashes = 0;
                while at(i) == '#' {
                    hashes += 1;
                    i += 1;
                }
                i += 1;
                'raw: while i < chars.len() {
                    if chars[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#') {
                        i += 1 + hashes;
                        break 'raw;
                    }
                    i += 1;
                }
                out.push(String::from("\"\""));
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                i = skip_string(&chars, i + 1);
                out.push(String::from("\"\""));
            } else if word == "b" && at(i) == '\'' {
                i += if at(i + 1) == '\\' { 4 } else { 3 };
                while i < chars.len() && chars[i - 1] != '\'' {
                    i += 1;
                }
            } else if word == "r" && at(i) == '#' {
                // A raw identifier.
                i += 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                out.push(chars[start..i].iter().collect());
            } else {
                out.push(word);
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push(String::from("::"));
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The index just past the closing quote of a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn is_ident(token: &str) -> bool {
    token.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
}

/// One name a `use` tree brings in: its full path as written and the name it gets here
/// (`*` for a glob).
#[derive(Clone, Debug)]
struct UseLeaf {
    path: Vec<String>,
    local: String,
}

/// A path and where it appears: `inline` is the stack of inline modules around it.
#[derive(Clone, Debug)]
struct Written {
    path: Vec<String>,
    inline: usize,
    reexport: bool,
    local: String,
}

/// What one file says about modules.
#[derive(Default, Debug)]
struct Parsed {
    /// `mod x;` at file level.
    mods: Vec<String>,
    /// `use` leaves (with `reexport` for `pub`/`pub(..)` ones) and paths in code.
    uses: Vec<Written>,
    code_paths: Vec<Written>,
    /// Items defined at file level.
    items: BTreeSet<String>,
    /// Identifiers in code outside `use` statements.
    code_idents: BTreeSet<String>,
}

fn parse(file: &str, src: &str) -> Result<Parsed, String> {
    let toks = tokens(src);
    let tok = |i: usize| toks.get(i).map(String::as_str).unwrap_or("");
    let mut parsed = Parsed::default();
    // Inline modules: the brace depth each one opened at.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let t = tok(i);
        match t {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            "#" if tok(i + 1) == "[" && tok(i + 2) == "path" && tok(i + 3) == "=" => {
                return Err(format!("{file}: `#[path]` on a module; the circle check does not follow it yet"));
            }
            "mod" if is_ident(tok(i + 1)) && tok(i + 2) == ";" => {
                if !inline.is_empty() {
                    return Err(format!("{file}: `mod {};` inside an inline module is not supported", tok(i + 1)));
                }
                parsed.mods.push(tok(i + 1).to_string());
                i += 3;
                continue;
            }
            "mod" if is_ident(tok(i + 1)) && tok(i + 2) == "{" => {
                inline.push(depth);
                depth += 1;
                i += 3;
                continue;
            }
            "use" if tok(i + 1) != "<" => {
                let reexport = tok(i.wrapping_sub(1)) == "pub"
                    || tok(i.wrapping_sub(1)) == ")" && {
                        let mut j = i - 1;
                        while j > 0 && tok(j) != "(" {
                            j -= 1;
                        }
                        tok(j.wrapping_sub(1)) == "pub"
                    };
                let mut leaves = Vec::new();
                let end = use_tree(&toks, i + 1, Vec::new(), &mut leaves).map_err(|e| format!("{file}: {e}"))?;
                if tok(end) != ";" {
                    return Err(format!("{file}: a `use` tree ends in `{}`, not `;`", tok(end)));
                }
                for leaf in leaves {
                    parsed.uses.push(Written { path: leaf.path, inline: inline.len(), reexport, local: leaf.local });
                }
                i = end + 1;
                continue;
            }
            _ => {}
        }
        if inline.is_empty()
            && matches!(t, "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "union")
            && is_ident(tok(i + 1))
        {
            parsed.items.insert(tok(i + 1).to_string());
        }
        if inline.is_empty() && t == "macro_rules" && tok(i + 1) == "!" {
            parsed.items.insert(tok(i + 2).to_string());
        }
        if is_ident(t) {
            parsed.code_idents.insert(t.to_string());
        }
        // The start of a path: not after `::`, and not the `in` path of `pub(in ..)`.
        if is_ident(t) && tok(i + 1) == "::" && tok(i.wrapping_sub(1)) != "::" && tok(i.wrapping_sub(1)) != "in" {
            let mut path = vec![t.to_string()];
            let mut j = i;
            while tok(j + 1) == "::" && is_ident(tok(j + 2)) {
                path.push(tok(j + 2).to_string());
                j += 2;
            }
            parsed.code_idents.extend(path.iter().cloned());
            let local = path.last().cloned().unwrap_or_default();
            parsed.code_paths.push(Written { path, inline: inline.len(), reexport: false, local });
            i = j + 1;
            continue;
        }
        i += 1;
    }
    Ok(parsed)
}

/// Reads one `use` tree from `i`, adding its leaves to `out`; returns the index after it.
fn use_tree(toks: &[String], mut i: usize, mut path: Vec<String>, out: &mut Vec<UseLeaf>) -> Result<usize, String> {
    let tok = |i: usize| toks.get(i).map(String::as_str).unwrap_or("");
    if tok(i) == "::" {
        // `use ::name`: always another crate.
        path.push(String::from("::"));
        i += 1;
    }
    loop {
        match tok(i) {
            "{" => {
                i += 1;
                while tok(i) != "}" {
                    i = use_tree(toks, i, path.clone(), out)?;
                    if tok(i) == "," {
                        i += 1;
                    } else if tok(i) != "}" {
                        return Err(format!("unexpected `{}` in a `use` list", tok(i)));
                    }
                }
                return Ok(i + 1);
            }
            "*" => {
                out.push(UseLeaf { path, local: String::from("*") });
                return Ok(i + 1);
            }
            name if is_ident(name) => {
                if tok(i + 1) == "::" {
                    path.push(name.to_string());
                    i += 2;
                    continue;
                }
                let (alias, next) = if tok(i + 1) == "as" { (Some(tok(i + 2)), i + 3) } else { (None, i + 1) };
                if name == "self" && !path.is_empty() {
                    let local = alias.or(path.last().map(String::as_str)).unwrap_or_default().to_string();
                    out.push(UseLeaf { path, local });
                } else {
                    path.push(name.to_string());
                    out.push(UseLeaf { path, local: alias.unwrap_or(name).to_string() });
                }
                return Ok(next);
            }
            other => return Err(format!("unexpected `{other}` in a `use` tree")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The module tree of one crate.

struct Module {
    file: String,
    /// The module path from the crate root (empty for the root).
    path: Vec<String>,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    parsed: Parsed,
}

/// The crate's modules, the root first, found by following `mod x;` from the root file.
fn module_tree(krate: &Crate) -> Result<Vec<Module>, String> {
    let src = krate.files.get(&krate.root).ok_or_else(|| format!("no file {}", krate.root))?;
    let mut modules = vec![Module {
        file: krate.root.clone(),
        path: Vec::new(),
        parent: None,
        children: BTreeMap::new(),
        parsed: parse(&krate.root, src)?,
    }];
    let mut next = 0;
    while next < modules.len() {
        let file = modules[next].file.clone();
        let (dir, stem) = file.rsplit_once('/').unwrap_or(("", file.as_str()));
        // `mod.rs`, `lib.rs`, `main.rs` and every crate root keep their children beside them;
        // `foo.rs` keeps them in `foo/`.
        let children_dir = if next == 0 || stem == "mod.rs" {
            dir.to_string()
        } else {
            format!("{dir}/{}", stem.trim_end_matches(".rs"))
        };
        for name in modules[next].parsed.mods.clone() {
            let flat = format!("{children_dir}/{name}.rs");
            let nested = format!("{children_dir}/{name}/mod.rs");
            let child_file = match (krate.files.get(&flat), krate.files.get(&nested)) {
                (Some(_), None) => flat,
                (None, Some(_)) => nested,
                (Some(_), Some(_)) => return Err(format!("{file}: both {flat} and {nested} exist for `mod {name};`")),
                (None, None) => return Err(format!("{file}: no {flat} or {nested} for `mod {name};`")),
            };
            let child_src = krate.files.get(&child_file).ok_or_else(|| format!("no file {child_file}"))?;
            let mut path = modules[next].path.clone();
            path.push(name.clone());
            let index = modules.len();
            let parsed = parse(&child_file, child_src)?;
            modules.push(Module { file: child_file, path, parent: Some(next), children: BTreeMap::new(), parsed });
            modules[next].children.insert(name, index);
        }
        next += 1;
    }
    Ok(modules)
}

/// Where a path leads.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    /// A module (with its own name), or an item that module defines (with the item's name).
    Module(usize, String),
    /// Another crate, or a name this check cannot place (a local variable's type, an enum).
    Outside,
}

struct Resolver<'a> {
    modules: &'a [Module],
}

/// The re-exports and local names being followed, against loops.
type Seen = BTreeSet<(usize, String)>;

impl Resolver<'_> {
    /// Resolves `path` written in module `at`, with `inline` inline modules around it.
    fn resolve(&self, at: usize, inline: usize, path: &[String], seen: &mut Seen) -> Target {
        let Some(first) = path.first() else { return Target::Outside };
        let mut inline = inline;
        let mut module = at;
        let mut rest = &path[1..];
        match first.as_str() {
            "crate" | "$crate" => {
                module = 0;
                inline = 0;
            }
            "self" => {}
            "super" => {
                let mut supers = 1;
                while rest.first().is_some_and(|s| s == "super") {
                    supers += 1;
                    rest = &rest[1..];
                }
                for _ in 0..supers {
                    if inline > 0 {
                        inline -= 1;
                    } else if let Some(parent) = self.modules[module].parent {
                        module = parent;
                    } else {
                        return Target::Outside;
                    }
                }
            }
            name => {
                // A bare first segment: a child module, or a local name for a module.
                if inline > 0 {
                    return Target::Outside;
                }
                if let Some(&child) = self.modules[module].children.get(name) {
                    module = child;
                } else if let Some(target) = self.local_module(module, name, seen) {
                    module = target;
                } else {
                    return Target::Outside;
                }
            }
        }
        if inline > 0 {
            // Anything named inside an inline module is its file's.
            return Target::Module(module, path.last().cloned().unwrap_or_default());
        }
        self.walk(module, rest, seen)
    }

    /// The module a file-level `use` in `module` names `name`, if it names a module.
    fn local_module(&self, module: usize, name: &str, seen: &mut Seen) -> Option<usize> {
        let uses = &self.modules[module].parsed.uses;
        uses.iter().filter(|u| u.local == name && u.inline == 0).find_map(|u| match self.resolve_use(module, u, seen) {
            Target::Module(t, _) if self.modules[t].path.last() == u.path.last() => Some(t),
            _ => None,
        })
    }

    /// Resolves a `use` leaf of `module`, once per chain of re-exports.
    fn resolve_use(&self, module: usize, leaf: &Written, seen: &mut Seen) -> Target {
        let key = (module, leaf.path.join("::"));
        if !seen.insert(key.clone()) {
            return Target::Outside;
        }
        let target = self.resolve(module, leaf.inline, &leaf.path, seen);
        seen.remove(&key);
        target
    }

    /// Follows `rest` down from `module`: through child modules, then re-exports.
    fn walk(&self, mut module: usize, mut rest: &[String], seen: &mut Seen) -> Target {
        while let Some(name) = rest.first() {
            if let Some(&child) = self.modules[module].children.get(name) {
                module = child;
                rest = &rest[1..];
                continue;
            }
            return match self.reexport(module, name, seen) {
                Some(Target::Module(target, _)) if rest.len() > 1 && self.is_module(target, name) => {
                    self.walk(target, &rest[1..], seen)
                }
                Some(target) => target,
                None => Target::Module(module, name.clone()),
            };
        }
        Target::Module(module, self.module_name(module))
    }

    /// Where `name` leads if `module` re-exports it rather than defining it.
    fn reexport(&self, module: usize, name: &str, seen: &mut Seen) -> Option<Target> {
        let m = &self.modules[module];
        if m.parsed.items.contains(name) {
            return None;
        }
        let exports = || m.parsed.uses.iter().filter(|u| u.reexport && u.inline == 0);
        if let Some(leaf) = exports().find(|u| u.local == name) {
            return Some(self.resolve_use(module, leaf, seen));
        }
        for glob in exports().filter(|u| u.local == "*") {
            if let Target::Module(target, _) = self.resolve_use(module, glob, seen)
                && self.defines(target, name)
            {
                return Some(self.walk(target, &[name.to_string()], seen));
            }
        }
        None
    }

    /// Whether `module` has an item, child module or re-export called `name`.
    fn defines(&self, module: usize, name: &str) -> bool {
        let m = &self.modules[module];
        m.parsed.items.contains(name)
            || m.children.contains_key(name)
            || m.parsed.uses.iter().any(|u| u.reexport && u.inline == 0 && u.local == name)
    }

    /// Whether `name`, re-exported, led to module `target` itself rather than to an item.
    fn is_module(&self, target: usize, name: &str) -> bool {
        self.modules[target].path.last().is_some_and(|last| last == name)
    }

    fn module_name(&self, module: usize) -> String {
        self.modules[module].path.last().cloned().unwrap_or_else(|| String::from("crate"))
    }

    fn is_descendant(&self, module: usize, of: usize) -> bool {
        let mut m = Some(module);
        while let Some(current) = m {
            if current == of {
                return true;
            }
            m = self.modules[current].parent;
        }
        false
    }
}

/// The import edges of a crate: (from, to) to the names that tie them.
fn edges(modules: &[Module]) -> BTreeMap<(usize, usize), BTreeSet<String>> {
    let resolver = Resolver { modules };
    let mut edges: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
    for (from, module) in modules.iter().enumerate() {
        let mut add = |to: usize, name: &str| {
            if to != from {
                edges.entry((from, to)).or_default().insert(name.to_string());
            }
        };
        for leaf in &module.parsed.uses {
            let Target::Module(to, name) = resolver.resolve(from, leaf.inline, &leaf.path, &mut Seen::new()) else {
                continue;
            };
            // A re-export of the module's own descendant is its public face, not a use,
            // unless its code uses the name too.
            if leaf.reexport
                && leaf.inline == 0
                && resolver.is_descendant(to, from)
                && (leaf.local == "*" || !module.parsed.code_idents.contains(&leaf.local))
            {
                continue;
            }
            add(to, &if leaf.local == "*" { format!("{name}::*") } else { name });
        }
        for path in &module.parsed.code_paths {
            if let Target::Module(to, name) = resolver.resolve(from, path.inline, &path.path, &mut Seen::new()) {
                add(to, &name);
            }
        }
    }
    edges
}

/// The circles of one crate as text, empty when there are none.
fn crate_circles(krate: &Crate) -> Result<String, String> {
    let modules = module_tree(krate)?;
    let edges = edges(&modules);
    let mut out = String::new();
    let components: Vec<Vec<usize>> =
        strongly_connected(modules.len(), &edges).into_iter().filter(|c| c.len() > 1).collect();
    if components.is_empty() {
        return Ok(out);
    }
    let name = |m: usize| modules[m].file.as_str();
    let _ = writeln!(out, "crate {}: {} circle(s)", krate.root, components.len());
    for (n, component) in components.iter().enumerate() {
        let mut files: Vec<&str> = component.iter().map(|&m| name(m)).collect();
        files.sort_unstable();
        let _ = writeln!(out, "  circle {}: {}", n + 1, files.join(", "));
        let inside: BTreeSet<usize> = component.iter().copied().collect();
        let mut lines: Vec<String> = edges
            .iter()
            .filter(|((a, b), _)| inside.contains(a) && inside.contains(b))
            .map(|((a, b), names)| {
                format!("    {} -> {}: {}", name(*a), name(*b), names.iter().cloned().collect::<Vec<_>>().join(", "))
            })
            .collect();
        lines.sort();
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        for cycle in shortest_cycles(&inside, &edges) {
            let mut chain: Vec<&str> = cycle.iter().map(|&m| name(m)).collect();
            chain.push(name(cycle[0]));
            let _ = writeln!(out, "    loop: {}", chain.join(" -> "));
        }
    }
    Ok(out)
}

/// Tarjan's strongly connected components.
fn strongly_connected(count: usize, edges: &BTreeMap<(usize, usize), BTreeSet<String>>) -> Vec<Vec<usize>> {
    struct State<'a> {
        next: &'a BTreeMap<usize, Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.counter);
        s.low[v] = s.counter;
        s.counter += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.next.get(&v).map(Vec::as_slice).unwrap_or_default() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(index) if s.on_stack[w] => s.low[v] = s.low[v].min(index),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let mut next: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &(a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
    }
    let mut state = State {
        next: &next,
        index: vec![None; count],
        low: vec![0; count],
        on_stack: vec![false; count],
        stack: Vec::new(),
        counter: 0,
        out: Vec::new(),
    };
    for v in 0..count {
        if state.index[v].is_none() {
            visit(&mut state, v);
        }
    }
    state.out
}

/// For every edge inside a component, the shortest loop through it, each loop once.
fn shortest_cycles(inside: &BTreeSet<usize>, edges: &BTreeMap<(usize, usize), BTreeSet<String>>) -> Vec<Vec<usize>> {
    let inner = |(a, b): &&(usize, usize)| inside.contains(a) && inside.contains(b);
    let mut next: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &(a, b) in edges.keys().filter(inner) {
        next.entry(a).or_default().push(b);
    }
    let mut cycles: BTreeSet<Vec<usize>> = BTreeSet::new();
    for &(a, b) in edges.keys().filter(inner) {
        // Breadth first from b back to a.
        let mut previous: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([b]);
        let mut seen = BTreeSet::from([b]);
        while let Some(v) = queue.pop_front() {
            if v == a {
                break;
            }
            for &w in next.get(&v).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(w) {
                    previous.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        let mut cycle = vec![a];
        let mut v = a;
        while v != b {
            let Some(&p) = previous.get(&v) else { break };
            cycle.push(p);
            v = p;
        }
        // `cycle` runs a, .., b backwards along the edges; turn it to a -> b -> .. -> a.
        cycle[1..].reverse();
        let start = cycle.iter().enumerate().min_by_key(|(_, m)| **m).map(|(i, _)| i).unwrap_or_default();
        cycle.rotate_left(start);
        cycles.insert(cycle);
    }
    cycles.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// The check on hand-written crates: it finds what it must and nothing else.

/// The circles of a crate made of `files` (path, source), the first one its root.
fn circles_of(files: &[(&str, &str)]) -> String {
    let krate = Crate {
        root: files[0].0.to_string(),
        files: files.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect(),
    };
    crate_circles(&krate).expect("the snippet parses")
}

#[test]
fn finds_a_circle_through_use_crate() {
    let found = circles_of(&[
        ("c/src/lib.rs", "mod a;\nmod b;\n"),
        ("c/src/a.rs", "use crate::b::{B, inner::{self as x}};\npub struct A;\n"),
        ("c/src/b.rs", "use crate::a::A as Renamed;\npub struct B;\n"),
    ]);
    assert!(found.contains("c/src/a.rs -> c/src/b.rs: B, inner"), "{found}");
    assert!(found.contains("c/src/b.rs -> c/src/a.rs: A"), "{found}");
}

#[test]
fn finds_a_circle_through_an_inline_path() {
    let found = circles_of(&[
        ("c/src/lib.rs", "mod a;\nmod b;\n"),
        ("c/src/a.rs", "use crate::b;\npub fn f() {}\n"),
        ("c/src/b.rs", "pub fn g() -> u8 {\n    crate::a::f();\n    0\n}\n"),
    ]);
    assert!(found.contains("c/src/a.rs -> c/src/b.rs: b"), "{found}");
    assert!(found.contains("c/src/b.rs -> c/src/a.rs: f"), "{found}");
}

#[test]
fn finds_a_circle_through_a_root_reexport() {
    let found = circles_of(&[
        ("c/src/lib.rs", "mod a;\nmod b;\npub use a::{A, Other};\n"),
        ("c/src/a.rs", "use crate::b::B;\npub struct A;\npub struct Other;\n"),
        ("c/src/b.rs", "use crate::{\n    A,\n};\npub struct B;\n"),
    ]);
    assert!(found.contains("c/src/b.rs -> c/src/a.rs: A"), "{found}");
    assert!(
        !found.contains("-> c/src/lib.rs") && !found.contains("c/src/lib.rs ->"),
        "a re-export alone is no tie: {found}"
    );
}

#[test]
fn finds_a_circle_through_super() {
    let found = circles_of(&[
        ("c/src/lib.rs", "mod p;\nmod q;\n"),
        ("c/src/q.rs", "pub struct Q;\n"),
        ("c/src/p/mod.rs", "mod c;\nmod d;\n"),
        ("c/src/p/c.rs", "use super::d::D;\npub struct C(super::super::q::Q);\n"),
        ("c/src/p/d.rs", "pub struct D;\nfn f() { let _ = super::c::C; }\n"),
    ]);
    assert!(found.contains("c/src/p/c.rs -> c/src/p/d.rs: D"), "{found}");
    assert!(found.contains("c/src/p/d.rs -> c/src/p/c.rs: C"), "{found}");
    assert!(!found.contains("q.rs"), "{found}");
}

#[test]
fn finds_a_circle_through_the_root_and_a_chain() {
    let found = circles_of(&[
        ("c/src/main.rs", "mod a;\nmod b;\nmod x;\npub struct Error;\nfn main() { a::f(); }\n"),
        ("c/src/a.rs", "pub fn f() { crate::b::g() }\n"),
        ("c/src/b.rs", "pub fn g() { let _ = crate::x::X; }\n"),
        ("c/src/x.rs", "use crate::Error;\npub struct X;\n"),
    ]);
    assert!(
        found.contains("loop: c/src/main.rs -> c/src/a.rs -> c/src/b.rs -> c/src/x.rs -> c/src/main.rs"),
        "{found}"
    );
}

#[test]
fn a_crate_without_circles_passes() {
    let found = circles_of(&[
        (
            "c/src/lib.rs",
            "//! Mentions `crate::b::B` and `use crate::b::B;`.\nmod a;\nmod b;\npub use a::A;\npub use b::B;\n\
             /// The crate's error.\npub type Error = String;\n",
        ),
        (
            "c/src/a.rs",
            "use crate::Error;\nuse crate::b::B;\n/* use crate::b; /* nested */ crate::b::x */\npub struct A(B);\n\
             pub fn f() -> Result<(), Error> { Ok(()) }\n",
        ),
        (
            "c/src/b.rs",
            "use crate::Error;\n/// See [`crate::a::A`].\npub struct B;\n\
             fn g<'a>(s: &'a str) -> Result<char, Error> {\n    let _ = \"crate::a::f()\";\n    \
             let _ = r#\"use crate::a::A; \"quoted\"\"#;\n    let _ = '\"';\n    let _ = b'\\'';\n    Ok('x')\n}\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::b::B;\n    #[test]\n    fn t() { super::g(\"\").ok(); }\n}\n",
        ),
    ]);
    assert!(found.is_empty(), "{found}");
}

#[test]
fn a_module_path_attribute_is_refused() {
    let krate = Crate {
        root: String::from("c/src/lib.rs"),
        files: [("c/src/lib.rs", "#[path = \"other.rs\"]\nmod a;\n"), ("c/src/other.rs", "")]
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect(),
    };
    let error = crate_circles(&krate).expect_err("`#[path]` is not followed, so it must not pass silently");
    assert!(error.contains("#[path]"), "{error}");
}

/// The layer check itself can fail: an import from a lower layer up, one sideways, and a
/// module the table does not place are each reported.
#[test]
fn an_import_up_or_sideways_is_reported() {
    let files = [
        ("c/src/lib.rs", "mod low;\nmod high;\nmod side;\nmod stray;\n"),
        ("c/src/low.rs", "use crate::high::H;\npub struct L;\n"),
        ("c/src/high.rs", "pub struct H;\n"),
        ("c/src/side.rs", "use crate::high::H;\nuse crate::stray::S;\n"),
        ("c/src/stray.rs", "pub struct S;\n"),
    ];
    let krate = Crate {
        root: "c/src/lib.rs".into(),
        files: files.iter().map(|&(name, src)| (name.to_string(), src.to_string())).collect(),
    };
    let layers = [("low", 0), ("high", 1), ("side", 1)];
    let found = imports_against_layers(&krate, "c/src/", &layers).expect("the snippet parses");
    assert!(found.contains("c/src/low.rs (layer 0) -> c/src/high.rs (layer 1): H"), "{found}");
    assert!(found.contains("c/src/side.rs (layer 1) -> c/src/high.rs (layer 1): H"), "{found}");
    assert!(found.contains("`stray` has no layer"), "{found}");
    let allowed = imports_against_layers(&krate, "c/src/", &[("low", 2), ("high", 0), ("side", 1), ("stray", 0)])
        .expect("the snippet parses");
    assert!(allowed.is_empty(), "{allowed}");
}
