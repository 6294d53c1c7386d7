//! Parsing in proportion to the change: the `services:` of a file in plain block style, one
//! service's text at a time, each text parsed only when this process has not parsed that very
//! text before.
//!
//! Parsing a YAML value is a function of its text alone once no anchor, alias, merge key or
//! tag can reach across services. So a file is cut into its top-level part and one chunk per
//! service, only where the cut is plain to see: top-level keys at column 0, the services one
//! level deeper, no tabs, no carriage returns, no byte order mark, no `&` (anchors), no `<<`,
//! no directives or document markers. Anything else, and any chunk that does not parse as
//! exactly one service, gives `None`: the caller parses the whole file as before, so every
//! error still comes from the whole file, with its line and column.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{ServiceConfig, Services, UpFile};

/// The services parsed last, by their text (name and value): the chunks of the file parsed
/// last (a file parsed after it replaces them).
static PARSED: Mutex<Option<HashMap<String, (String, ServiceConfig)>>> = Mutex::new(None);

/// `rendered` parsed service by service, or `None` when it cannot be cut safely or does not
/// parse (the whole file is parsed then).
pub fn parse(rendered: &str) -> Option<UpFile> {
    let cut = cut(rendered)?;
    let head: UpFile = serde_yaml::from_str(&cut.head).ok()?;
    if !head.services.0.is_empty() {
        return None;
    }
    let mut memo = PARSED.lock().ok()?;
    let mut last = memo.take().unwrap_or_default();
    let mut now = HashMap::with_capacity(cut.services.len());
    let mut services = BTreeMap::new();
    let mut ok = true;
    for chunk in cut.services {
        let (text, parsed) = match last.remove_entry(chunk) {
            Some(seen) => seen,
            None => match one_service(chunk) {
                Some(p) => (chunk.to_owned(), p),
                None => {
                    ok = false;
                    break;
                }
            },
        };
        let duplicate = services
            .insert(parsed.0.clone(), parsed.1.clone())
            .is_some();
        now.insert(text, parsed);
        if duplicate {
            // The same name twice: the whole file says so.
            ok = false;
            break;
        }
    }
    *memo = Some(if ok {
        now
    } else {
        last.extend(now);
        last
    });
    ok.then_some(UpFile {
        common: head.common,
        services: Services(services),
    })
}

/// Exactly one service, from its text.
fn one_service(chunk: &str) -> Option<(String, ServiceConfig)> {
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

/// Whether a line says nothing (blank, or a comment).
fn blank(line: &str) -> bool {
    let t = line.trim_start_matches(' ');
    t.is_empty() || t.starts_with('#')
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn cut(text: &str) -> Option<Cut<'_>> {
    if text.contains(['\t', '\r', '\u{feff}', '&']) || text.contains("<<") {
        return None;
    }
    // Byte offsets of each line's start (a last line without `\n` included).
    let mut starts = vec![0];
    starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    if starts.last() == Some(&text.len()) {
        starts.pop();
    }
    let line = |i: usize| {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        text[starts[i]..end].trim_end_matches('\n')
    };
    let count = starts.len();
    let mut key_line = None;
    for i in 0..count {
        let l = line(i);
        if blank(l) || indent(l) > 0 {
            continue;
        }
        if l.starts_with(['%', '-', '.', '{', '[', '?', '!', '*', '"', '\'', '|', '>']) {
            return None;
        }
        if let Some(rest) = l.strip_prefix("services:") {
            let rest = rest.trim_start_matches(' ');
            if key_line.is_some() || !(rest.is_empty() || rest.starts_with('#')) {
                return None;
            }
            key_line = Some(i);
        }
    }
    let key_line = key_line?;
    // The services: every line after the key up to the next line at column 0 that says
    // something.
    let end = (key_line + 1..count)
        .find(|&i| !blank(line(i)) && indent(line(i)) == 0)
        .unwrap_or(count);
    let first = (key_line + 1..end).find(|&i| !blank(line(i)))?;
    let level = indent(line(first));
    let mut heads = Vec::new();
    for i in first..end {
        let l = line(i);
        if blank(l) {
            continue;
        }
        match indent(l) {
            n if n == level => heads.push(i),
            n if n < level => return None,
            _ => {}
        }
    }
    let offset = |i: usize| starts.get(i).copied().unwrap_or(text.len());
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
            assert_eq!(parse(&text), Some(whole), "{v}");
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
                    if let Some(cut) = parse(text) {
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
