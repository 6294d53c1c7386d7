//! Parsing in proportion to the change: the `services:` of a file in plain block style, one
//! service's text at a time, each text parsed only when it is not the text of a service of the
//! file this process parsed last.
//!
//! Parsing a YAML value is a function of its text alone once no anchor, alias, merge key or
//! tag can reach across services. So a file is cut into its top-level part and one chunk per
//! service, only where the cut is plain to see: top-level keys at column 0, the services one
//! level deeper, no tabs, no carriage returns, no byte order mark, no `&` (anchors), no `<<`,
//! no directives or document markers. Anything else, and any chunk that does not parse as
//! exactly one service, gives `None`: the caller parses the whole file as before, so every
//! error still comes from the whole file, with its line and column.
//!
//! A chunk is first compared with the chunk of the last file at the same position, then at the
//! same distance from the end (an insertion or a removal shifts the services after it), and
//! only then looked up among all of them: an edit of one service compares bytes, hashes
//! nothing and parses one service. The services found are shared (`Arc`), never copied.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{ServiceConfig, Services, UpFile};

/// The file parsed last, service by service.
#[derive(Default)]
struct Last {
    /// Shared with the document it was parsed for (not copied).
    text: Arc<str>,
    /// Each service: where its text is in `text`, its name and what it parsed to, in the order
    /// of the file.
    chunks: Chunks,
    /// The file's text without its services (`Cut::head`), and its `common:` as parsed.
    head: Option<(String, super::CommonConfig)>,
}

/// By file, at most [`FILES_REMEMBERED`](crate::config::FILES_REMEMBERED): one in the
/// supervisor; many in a test binary, whose tests parse side by side in one process.
static PARSED: Mutex<Vec<(PathBuf, Last)>> = Mutex::new(Vec::new());

/// `rendered`, the text of `path`, parsed service by service, or `None` when it cannot be cut
/// safely or does not parse (the whole file is parsed then).
pub fn parse(path: &Path, rendered: &Arc<str>) -> Option<UpFile> {
    let cut = cut(rendered)?;
    let last = {
        let mut all = PARSED.lock().ok()?;
        let found = all.iter().position(|(p, _)| p == path);
        found.map(|i| all.swap_remove(i).1)
    }
    .unwrap_or_default();
    // The text around the services, parsed again only when it changed (most saves edit a
    // service).
    let common = match &last.head {
        Some((text, common)) if *text == cut.head => Some(common.clone()),
        _ => {
            #[cfg(test)]
            tests::HEADS.with(|n| n.set(n.get() + 1));
            serde_yaml::from_str::<UpFile>(&cut.head)
        }
        .ok()
        .filter(|head| head.services.0.is_empty())
        .map(|head| head.common),
    };
    let parsed = common.and_then(|common| {
        parse_against(rendered, &cut.services, &last)
            .map(|(services, chunks)| (common, services, chunks))
    });
    // What is remembered: this file when it parsed, else the last one as it was.
    let (file, keep) = match parsed {
        Some((common, services, chunks)) => (
            Some(UpFile {
                common: common.clone(),
                services,
            }),
            Last {
                text: Arc::clone(rendered),
                chunks,
                head: Some((cut.head, common)),
            },
        ),
        None => (None, last),
    };
    if let Ok(mut all) = PARSED.lock() {
        all.retain(|(p, _)| p != path);
        if all.len() >= crate::config::FILES_REMEMBERED {
            all.remove(0);
        }
        all.push((path.to_owned(), keep));
    }
    file
}

type Chunks = Vec<(Range<usize>, Arc<str>, Arc<ServiceConfig>)>;

/// The services of `rendered`, cut at `texts`, sharing those of `last` whose text is the
/// same; and where each is in `rendered`. `None` when a chunk is not one service or a name
/// comes twice.
fn parse_against(rendered: &str, texts: &[&str], last: &Last) -> Option<(Services, Chunks)> {
    let old = |j: usize| &last.text[last.chunks[j].0.clone()];
    // Positions of the last file's chunks by text, made only from the second chunk that is
    // neither at its old position nor at its old distance from the end (one edited, inserted
    // or removed service is the first, and is parsed).
    let mut by_text: Option<HashMap<&str, usize>> = None;
    let mut missed = 0;
    let shift = texts.len() as isize - last.chunks.len() as isize;
    let mut chunks = Vec::with_capacity(texts.len());
    let mut services = Vec::with_capacity(texts.len());
    let base = rendered.as_ptr() as usize;
    for (i, chunk) in texts.iter().enumerate() {
        let from_end = usize::try_from(i as isize - shift).ok().filter(|&j| j != i);
        let seen = [Some(i), from_end]
            .into_iter()
            .flatten()
            .find(|&j| j < last.chunks.len() && old(j) == *chunk)
            .or_else(|| {
                missed += 1;
                if missed < 2 {
                    return None;
                }
                let index = by_text.get_or_insert_with(|| {
                    #[cfg(test)]
                    tests::SEARCHES.with(|n| n.set(n.get() + 1));
                    (0..last.chunks.len()).map(|j| (old(j), j)).collect()
                });
                index.get(chunk).copied()
            });
        let (name, service) = match seen {
            Some(j) => {
                let (_, name, service) = &last.chunks[j];
                (Arc::clone(name), Arc::clone(service))
            }
            None => one_service(chunk).map(|(name, service)| (Arc::from(name), service))?,
        };
        let at = chunk.as_ptr() as usize - base;
        services.push((String::from(&*name), Arc::clone(&service)));
        chunks.push((at..at + chunk.len(), name, service));
    }
    // Built at once (sorted first: a file's services are often in order already).
    let count = services.len();
    let services: BTreeMap<_, _> = services.into_iter().collect();
    if services.len() != count {
        // The same name twice: the whole file says so.
        return None;
    }
    Some((Services(services), chunks))
}

/// Exactly one service, from its text.
fn one_service(chunk: &str) -> Option<(String, Arc<ServiceConfig>)> {
    #[cfg(test)]
    tests::PARSES.with(|n| n.set(n.get() + 1));
    let Services(map) = serde_yaml::from_str(chunk).ok()?;
    let mut entries = map.into_iter();
    let one = entries.next()?;
    entries.next().is_none().then_some(one)
}

/// A file cut at its services.
#[derive(Debug, PartialEq)]
struct Cut<'a> {
    /// The file with the services' lines left out (`services: {}` in their place).
    head: String,
    /// Each service's lines, from its key to the next service's.
    services: Vec<&'a str>,
}

/// One line of a file, as [`cut`] looks at it.
struct Line {
    /// Where it starts in the text.
    start: usize,
    /// Its leading spaces.
    indent: usize,
    /// It says nothing (blank, or a comment).
    blank: bool,
}

/// Each line of `bytes` (a last line without `\n` included), looked at once.
fn lines(bytes: &[u8]) -> Vec<Line> {
    let mut out = Vec::with_capacity(bytes.len() / 24 + 1);
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', bytes).chain(
        // The last line, when it does not end with a newline.
        (bytes.last().is_some_and(|&b| b != b'\n')).then_some(bytes.len()),
    );
    for end in ends {
        let line = &bytes[start..end];
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = matches!(line.get(indent), None | Some(b'#'));
        out.push(Line {
            start,
            indent,
            blank,
        });
        start = end + 1;
    }
    out
}

fn cut(text: &str) -> Option<Cut<'_>> {
    // Searched for a byte (a few) at a time, not a character at a time: this runs on every
    // save, over every service's text.
    let bytes = text.as_bytes();
    if memchr::memchr3(b'\t', b'\r', b'&', bytes).is_some()
        || memchr::memmem::find(bytes, "\u{feff}".as_bytes()).is_some()
        || memchr::memmem::find(bytes, b"<<").is_some()
    {
        return None;
    }
    let lines = lines(bytes);
    let count = lines.len();
    let mut key_line = None;
    for (i, l) in lines.iter().enumerate() {
        if l.blank || l.indent > 0 {
            continue;
        }
        let said = &text[l.start..];
        if said.starts_with(['%', '-', '.', '{', '[', '?', '!', '*', '"', '\'', '|', '>']) {
            return None;
        }
        if let Some(rest) = said.strip_prefix("services:") {
            let rest = rest.trim_start_matches(' ');
            if key_line.is_some() || !(rest.is_empty() || rest.starts_with(['\n', '#'])) {
                return None;
            }
            key_line = Some(i);
        }
    }
    let key_line = key_line?;
    // The services: every line after the key up to the next line at column 0 that says
    // something.
    let end = (key_line + 1..count)
        .find(|&i| !lines[i].blank && lines[i].indent == 0)
        .unwrap_or(count);
    let first = (key_line + 1..end).find(|&i| !lines[i].blank)?;
    let level = lines[first].indent;
    let mut heads = Vec::new();
    for (i, l) in lines.iter().enumerate().take(end).skip(first) {
        if l.blank {
            continue;
        }
        match l.indent {
            n if n == level => heads.push(i),
            n if n < level => return None,
            _ => {}
        }
    }
    let offset = |i: usize| lines.get(i).map_or(text.len(), |l| l.start);
    let services = heads
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let to = heads.get(k + 1).copied().unwrap_or(end);
            &text[offset(i)..offset(to)]
        })
        .collect();
    let mut head = String::with_capacity(offset(key_line + 1) + text.len() - offset(end) + 16);
    head.push_str(&text[..offset(key_line)]);
    head.push_str("services: {}\n");
    head.push_str(&text[offset(end)..]);
    Some(Cut { head, services })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, UpDocument};

    thread_local! {
        /// How many services this thread parsed one by one.
        pub(super) static PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// How many times this thread parsed the text around a file's services.
        pub(super) static HEADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// How many times this thread looked a chunk up among all of the last file's.
        pub(super) static SEARCHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A project file saved version after version, as an editor does (a rename over it).
    struct Saved {
        dir: tempfile::TempDir,
    }

    impl Saved {
        fn new() -> Saved {
            Saved {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("mirrord-up.yaml")
        }

        /// Saves `text` and loads it: the document, or the error, and how many services were
        /// parsed one by one.
        fn save(&self, text: &str) -> (Result<UpDocument, ConfigError>, usize) {
            let tmp = self.dir.path().join(".tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path()).unwrap();
            let before = PARSES.with(|n| n.get());
            SEARCHES.with(|n| n.set(0));
            let loaded = UpDocument::load(&self.path(), Some("k"));
            (loaded, PARSES.with(|n| n.get()) - before)
        }

        /// Whether the last save looked a service up among all of the last file's (instead of
        /// finding it where it was, or at the same distance from the end).
        fn searched(&self) -> bool {
            SEARCHES.with(|n| n.get()) > 0
        }

        /// [`Self::save`], which must load to what the whole text parses to.
        fn good(&self, text: &str) -> (UpDocument, usize) {
            let (doc, parsed) = self.save(text);
            let doc = doc.unwrap();
            let whole: UpFile = serde_yaml::from_str(text).unwrap();
            assert_eq!(*doc.file, whole, "{text}");
            (doc, parsed)
        }

        /// The error `text` gives to a process that never parsed this file before (no memo).
        fn fresh_error(&self, text: &str) -> String {
            let other = self.dir.path().join("fresh").join("mirrord-up.yaml");
            let e = UpDocument::from_text(&other, text, "k").unwrap_err();
            e.to_string().replace(
                &other.display().to_string(),
                &self.path().display().to_string(),
            )
        }
    }

    fn services(list: &[(&str, &str)]) -> String {
        let mut text = String::from("services:\n");
        for (name, v) in list {
            text.push_str(&format!(
                "  {name}:\n    env: {{override: {{V: '{v}'}}}}\n    run:\n      command: [sleep, '1']\n"
            ));
        }
        text
    }

    fn v_of(doc: &UpDocument, name: &str) -> String {
        let env = doc.file.services.0[name].env.clone().unwrap();
        env.overrides.unwrap()["V"].0.clone()
    }

    /// Whether `name` is the very same parsed service in both documents.
    fn shared(a: &UpDocument, b: &UpDocument, name: &str) -> bool {
        Arc::ptr_eq(&a.file.services.0[name], &b.file.services.0[name])
    }

    /// An edit, an insertion, a removal (both shift the services after them), a rename and a
    /// reorder of services: each parses only the services whose text is new, shares every
    /// other one with the file loaded before, and loads to what the whole text parses to.
    #[test]
    fn a_saved_file_parses_only_the_services_whose_text_is_new() {
        let f = Saved::new();
        let base = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")];
        let (v0, parsed) = f.good(&services(&base));
        assert_eq!(parsed, 5, "the first load parses every service");

        // One service edited in place.
        let (v1, parsed) = f.good(&services(&[
            ("a", "1"),
            ("b", "1"),
            ("c", "2"),
            ("d", "1"),
            ("e", "1"),
        ]));
        assert_eq!(parsed, 1);
        assert!(!f.searched());
        assert_eq!(v_of(&v1, "c"), "2");
        for n in ["a", "b", "d", "e"] {
            assert!(shared(&v0, &v1, n), "{n} after an edit of c");
        }
        assert!(!shared(&v0, &v1, "c"));

        // A service inserted before others, then one removed before others.
        let inserted = [
            ("a", "1"),
            ("n", "1"),
            ("b", "1"),
            ("c", "2"),
            ("d", "1"),
            ("e", "1"),
        ];
        let (v2, parsed) = f.good(&services(&inserted));
        assert_eq!(parsed, 1, "only the inserted service");
        assert!(
            !f.searched(),
            "the services after it are where they were from the end"
        );
        for n in ["a", "b", "c", "d", "e"] {
            assert!(shared(&v1, &v2, n), "{n} after an insertion");
        }
        let (v3, parsed) = f.good(&services(&inserted[1..]));
        assert_eq!(parsed, 0, "a removal parses nothing");
        assert!(!f.searched());
        assert!(!v3.file.services.0.contains_key("a"));
        for n in ["n", "b", "c", "d", "e"] {
            assert!(shared(&v2, &v3, n), "{n} after a removal");
        }

        // A service renamed: a new service of that name, the old name gone.
        let renamed = [("n", "1"), ("b", "1"), ("r", "2"), ("d", "1"), ("e", "1")];
        let (v4, parsed) = f.good(&services(&renamed));
        assert_eq!(parsed, 1);
        assert!(!f.searched());
        assert!(!v4.file.services.0.contains_key("c"));
        assert_eq!(v_of(&v4, "r"), "2");
        for n in ["n", "b", "d", "e"] {
            assert!(shared(&v3, &v4, n), "{n} after a rename");
        }

        // Services reordered: the same texts, found where they moved.
        let mut reordered = renamed;
        reordered.reverse();
        let (v5, parsed) = f.good(&services(&reordered));
        // The first service out of place is taken for an edit (parsed); the others are found.
        assert_eq!(parsed, 1, "a reorder parses one service");
        for (n, _) in &renamed[..4] {
            assert!(shared(&v4, &v5, n), "{n} after a reorder");
        }
    }

    /// `common:` is not part of any service's text: a change to it is in the new document
    /// although every service is shared.
    #[test]
    fn a_change_to_common_is_seen_with_every_service_shared() {
        let f = Saved::new();
        let list = [("a", "1"), ("b", "1")];
        let (v0, _) = f.good(&format!("common: {{context: one}}\n{}", services(&list)));
        let heads = || HEADS.with(std::cell::Cell::get);
        let before = heads();
        let (v1, parsed) = f.good(&format!("common: {{context: two}}\n{}", services(&list)));
        assert_eq!(parsed, 0);
        assert_eq!(
            heads() - before,
            1,
            "the changed text around the services is parsed"
        );
        assert_eq!(v1.file.common.context.as_deref(), Some("two"));
        assert!(shared(&v0, &v1, "a") && shared(&v0, &v1, "b"));
        // A service edited: the text around the services is the same, and not parsed again.
        let before = heads();
        let (v2, parsed) = f.good(&format!(
            "common: {{context: two}}\n{}",
            services(&[("a", "2"), ("b", "1")])
        ));
        assert_eq!((parsed, heads() - before), (1, 0));
        assert_eq!(v2.file.common.context.as_deref(), Some("two"));
    }

    /// A duplicate name made by an edit, a service that does not parse, an unknown key: the
    /// error is the whole file's, with the line and column a first load gives; and after it,
    /// the next good save still shares what it can with the last good one.
    #[test]
    fn a_bad_edit_is_the_whole_files_error_and_loses_nothing() {
        let f = Saved::new();
        let list = [("a", "1"), ("b", "1"), ("c", "1")];
        let (v0, _) = f.good(&services(&list));
        let edits = [
            services(&[("a", "1"), ("b", "1"), ("a", "2")]),
            services(&list).replace("[sleep, '1']\n  c", "[sleep, '1'\n  c"),
            services(&list).replace("  b:\n    env", "  b:\n    nope: 1\n    env"),
        ];
        for text in &edits {
            let (loaded, _) = f.save(text);
            let error = loaded.unwrap_err().to_string();
            assert_eq!(error, f.fresh_error(text));
        }
        let (loaded, _) = f.save(&edits[0]);
        let error = loaded.unwrap_err().to_string();
        assert!(error.contains("duplicate service `a`"), "{error}");
        assert!(
            error.contains("line 10 column 3"),
            "the second `a`: {error}"
        );
        let (v1, parsed) = f.good(&services(&[("a", "1"), ("b", "1"), ("c", "2")]));
        assert_eq!(parsed, 1, "only c: a and b are the last good file's");
        assert!(shared(&v0, &v1, "a") && shared(&v0, &v1, "b"));
    }

    #[test]
    fn a_plain_file_is_cut_at_its_services() {
        let text = "# top\ncommon: {context: c}\nservices:  # the services\n  a:\n    run: {command: [x]}\n\n# between\n  \"b c\":\n    run:\n      command: [y]\nother: 1\n";
        let cut = cut(text).unwrap();
        assert_eq!(
            cut.services,
            [
                "  a:\n    run: {command: [x]}\n\n# between\n",
                "  \"b c\":\n    run:\n      command: [y]\n"
            ]
        );
        assert_eq!(
            cut.head,
            "# top\ncommon: {context: c}\nservices: {}\nother: 1\n"
        );
        // Without a last line break, the last service ends the file.
        let cut = super::cut("services:\n  a: {run: {command: [x]}}").unwrap();
        assert_eq!(cut.services, ["  a: {run: {command: [x]}}"]);
    }

    /// A file of several services is parsed service by service, and an edit of one is seen.
    #[test]
    fn a_file_is_parsed_service_by_service() {
        let file = |v: &str| {
            format!(
                "common: {{context: c}}\nservices:\n  a:\n    run: {{command: [x]}}\n  b:\n    env: {{override: {{V: '{v}'}}}}\n    run:\n      command: [y]\n"
            )
        };
        for v in ["1", "2", "1"] {
            let text = file(v);
            let whole: UpFile = serde_yaml::from_str(&text).unwrap();
            assert_eq!(
                parse(Path::new("/by-service"), &text.as_str().into()),
                Some(whole),
                "{v}"
            );
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Pieces of YAML that are easy to cut wrong: keys in every style, values on the key's
        /// line or below, strings and flow collections over several lines (some lines at the
        /// services' indentation or at column 0), block scalars, comments, blank lines,
        /// duplicates, unknown keys.
        fn service() -> impl Strategy<Value = String> {
            let key =
                prop::sample::select(vec!["a", "b", "\"c d\"", "'e'", "a", "x-y", "f # note"]);
            let body = prop::sample::select(vec![
                " {run: {command: [x]}}\n",
                "\n    run: {command: [x]}\n",
                "\n    run:\n      command: [x]\n    skip: true\n",
                "\n    run: {command: [\"x\n  b: y\"]}\n",
                "\n    run: {command: [\"x\nz: y\"]}\n",
                "\n    run: {command: [x,\n  y]}\n",
                "\n    run: {command: [x,\nb: y]}\n",
                "\n    env: {override: {A: 'one\n  two'}}\n    run: {command: [x]}\n",
                "\n    run: {command: [x]}\n    context: |\n      text\n  b: 1\n",
                "\n    run: {command: [x]}\n\n# comment\n\n",
                "\n    run: {command: [x]}\n    bad: 1\n",
                "\n  run: {command: [x]}\n",
                "\n      run: {command: [x]}\n",
                " 1\n",
            ]);
            (key, body).prop_map(|(k, b)| format!("  {k}:{b}"))
        }

        fn file() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec![
                    "",
                    "# c\n",
                    "common: {context: c}\n",
                    "common:\n  context: c\n",
                ]),
                prop::sample::select(vec!["services:\n", "services: # s\n", "services:\n\n"]),
                prop::collection::vec(service(), 1..5),
                prop::sample::select(vec![
                    "",
                    "x-a: 1\n",
                    "common: {}\n",
                    "# end",
                    "other:\n  - 1\n",
                ]),
            )
                .prop_map(|(head, key, services, tail)| {
                    format!("{head}{key}{}{tail}", services.concat())
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Whatever sequence of files is parsed, what the cut parse gives is what the
            /// whole file parses to (it may give nothing, never something else).
            #[test]
            fn the_cut_parse_is_the_whole_parse(texts in prop::collection::vec(file(), 1..6)) {
                for text in &texts {
                    if let Some(cut) = parse(Path::new("/props"), &text.as_str().into()) {
                        let whole = serde_yaml::from_str::<UpFile>(text);
                        prop_assert!(whole.is_ok(), "{text:?}: {:?}", whole.err());
                        prop_assert_eq!(cut, whole.unwrap(), "{:?}", text);
                    }
                }
            }
        }
    }

    #[test]
    fn anything_unusual_is_not_cut() {
        for text in [
            "services:\n\t a: {}\n",
            "services:\r\n  a: {}\r\n",
            "\u{feff}services:\n  a: {}\n",
            "services:\n  a:\n    env: {A: \"\u{feff}\"}\n",
            "x-a: &a {}\nservices:\n  a: *a\n",
            "services:\n  a:\n    <<: {}\n",
            "---\nservices:\n  a: {}\n",
            "%YAML 1.2\n---\nservices:\n  a: {}\n",
            "{services: {a: {}}}\n",
            "services: {a: {}}\n",
            "\"services\":\n  a: {}\n",
            "services:\n  a: {}\nservices:\n  b: {}\n",
            "services:\n    a: {}\n  b: {}\n",
            "common: {}\n",
            "services:\n",
        ] {
            assert_eq!(cut(text), None, "{text:?}");
        }
    }
}
