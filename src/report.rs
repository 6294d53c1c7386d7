//! mirrord's final error report, reduced to its cause (runtime spec §1.4).
//!
//! Every fatal mirrord error ends the process with `Error: ` and miette's report on stderr:
//! `Error:   × <message>` (wrapped at 80 columns, continuations start with `  │ `), one
//! `  ├─▶ …`/`  ╰─▶ …` line per source in the chain (continuations indented 6 columns), then
//! `  help: …` and, for most errors, a general help block (bug report URL, Slack, e-mail). The
//! cause is the message and the chain; the help is the same for every failure of a kind and
//! says nothing about this one, so it is left out. Pure: text in, one line out.

/// The cause of the last mirrord error report in `text` (a log or a stderr capture), as one
/// line: wrapped lines joined with a space, chain entries that add something joined with
/// `: `. `None` when `text` holds no report.
///
/// Besides the graphical form, the forms mirrord prints under `NO_GRAPHICS` (`Error: <message>`
/// on one line) and for `ls`/`ext` (`Error: {"message": …, "causes": […]}`), and clap's usage
/// errors (`error: unexpected argument …`, exit 2), are understood.
pub fn cause(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("Error: ") || l.starts_with("error: "))?;
    let first = lines[start];
    if let Some(rest) = first.strip_prefix("error: ") {
        // clap: the first line says it; the rest is usage and `--help` advice.
        return non_empty(squash(rest));
    }
    let rest = first["Error: ".len()..].trim_start();
    if let Some(message) = rest.strip_prefix('×') {
        return non_empty(graphical(message, &lines[start + 1..]));
    }
    if rest.starts_with('{')
        && let Some(found) = json_report(rest)
    {
        return non_empty(found);
    }
    // NO_GRAPHICS: the message unwrapped on this line; `Diagnostic severity`, `diagnostic
    // help` and the help text follow.
    non_empty(squash(rest))
}

/// As [`cause`], but only miette's graphical form (`Error:   × …`), which an application's own
/// output is most unlikely to hold: for text written after `Ready!`, where the application
/// shares the output (mirrord still reports there when `execve` fails).
pub fn graphical_cause(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let start = lines.iter().rposition(|l| {
        l.strip_prefix("Error:")
            .is_some_and(|r| r.trim_start().starts_with('×'))
    })?;
    let message = lines[start]["Error:".len()..].trim_start();
    non_empty(graphical(&message['×'.len_utf8()..], &lines[start + 1..]))
}

/// The segments of a graphical report: the message, then each chain entry.
fn graphical(message: &str, after: &[&str]) -> String {
    let mut segments = vec![message.trim().to_owned()];
    for line in after {
        let continuation = line
            .strip_prefix("  │")
            .or_else(|| line.strip_prefix("      ").filter(|_| segments.len() > 1));
        if let Some(more) = continuation {
            let last = segments.last_mut().expect("one at least");
            last.push(' ');
            last.push_str(more.trim());
            continue;
        }
        match line
            .strip_prefix("  ├─▶")
            .or_else(|| line.strip_prefix("  ╰─▶"))
        {
            Some(entry) => segments.push(entry.trim().to_owned()),
            // `  help:`, the blank line that ends the report, or anything else.
            None => break,
        }
    }
    join_chain(segments.iter().map(|s| squash(s)))
}

/// `message: cause: cause…`, leaving out an entry whose text the line already holds (mirrord's
/// messages often repeat their source: `failed to read config from file: failed to parse Json`
/// is followed by the entry `failed to parse Json`).
fn join_chain(segments: impl Iterator<Item = String>) -> String {
    let mut out = String::new();
    for s in segments {
        if s.is_empty() || out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// `{"message": "...", "causes": [...], "help": ...}` (miette's JSON handler).
fn json_report(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let message = v.get("message")?.as_str()?.to_owned();
    let causes = v
        .get("causes")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_owned));
    Some(join_chain(
        std::iter::once(message).chain(causes).map(|s| squash(&s)),
    ))
}

/// Runs of whitespace (a wrapped line's joint) become one space.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured (runtime spec §1.4): failing `mirrord exec -- echo hi`, no cluster, stderr.
    const NO_CLUSTER: &str =
        "Error:   × Failed to create Kubernetes API client: Failed to infer Kube config:
  │ failed to infer config: in-cluster: (failed to read an incluster
  │ environment variable: environment variable not found), kubeconfig: (failed
  │ to read kubeconfig from '\"<scratch>/missing-kubeconfig\"': No such file or
  │ directory (os error 2))
  help: Please check that Kubernetes is configured correctly and test your
        connection with `kubectl get pods`.
        
        - If you're still stuck:
        
        >> Please open a new bug report at https://github.com/metalbear-co/
        mirrord/issues/new/choose
        
        >> Or join our Slack https://metalbear.com/slack and request help in
        #mirrord-help
        
        >> Or email us at hi@metalbear.com
        
        

";

    /// Captured: an unknown key in `mirrord.json` (a chain, with 6-column continuations).
    const UNKNOWN_KEY: &str =
        "Error:   × Failed to verify mirrord config: failed to read config from file: failed
  │ to parse Json
  ├─▶ failed to read config from file: failed to parse Json
  ├─▶ failed to parse Json
  ╰─▶ unknown field `bogus_key`, expected one of
      `accept_invalid_certificates`, `skip_processes`, `skip_build_tools`,
      `traceparent`, `baggage` at line 1 column 12
  help: Inspect your config file and arguments provided.
        
        - If you're still stuck:
        
        >> Please open a new bug report at https://github.com/metalbear-co/
        mirrord/issues/new/choose
";

    /// The simple-mode progress lines that precede a report in a service's log.
    const PROGRESS: &str = "mirrord exec (cli version 3.250.0)
version check
preparing to launch process
checking if target binary is dynamically linked
target binary is dynamically linked
extracting layer
layer extracted
checking operator
";

    #[test]
    fn the_cluster_error_is_the_message_unwrapped_without_the_help() {
        let c = cause(NO_CLUSTER).expect("a cause");
        assert_eq!(
            c,
            "Failed to create Kubernetes API client: Failed to infer Kube config: failed to infer config: in-cluster: (failed to read an incluster environment variable: environment variable not found), kubeconfig: (failed to read kubeconfig from '\"<scratch>/missing-kubeconfig\"': No such file or directory (os error 2))"
        );
        for help in ["help", "kubectl", "stuck", "Slack", "metalbear", ">>"] {
            assert!(!c.contains(help), "{help} in {c}");
        }
    }

    #[test]
    fn a_chain_adds_only_what_the_message_does_not_say_yet() {
        assert_eq!(
            cause(UNKNOWN_KEY).unwrap(),
            "Failed to verify mirrord config: failed to read config from file: failed to parse Json: unknown field `bogus_key`, expected one of `accept_invalid_certificates`, `skip_processes`, `skip_build_tools`, `traceparent`, `baggage` at line 1 column 12"
        );
    }

    #[test]
    fn progress_lines_before_the_report_are_skipped() {
        let log = format!("{PROGRESS}{NO_CLUSTER}");
        assert!(
            cause(&log)
                .unwrap()
                .starts_with("Failed to create Kubernetes API client:")
        );
    }

    #[test]
    fn the_last_report_counts() {
        let log = format!("{UNKNOWN_KEY}\n{PROGRESS}{NO_CLUSTER}");
        assert!(
            cause(&log)
                .unwrap()
                .starts_with("Failed to create Kubernetes API client:")
        );
    }

    #[test]
    fn one_line_reports_without_help_or_chain() {
        // Captured (§1.4 table).
        let nested = "Error:   × Detected mirrord being run within mirrord
  help: Running mirrord within mirrord is likely to fail or introduce severe
        slowness. If you are using a mirrord IDE plugin, please check that
        your build/run script does not invoke mirrord.

";
        assert_eq!(
            cause(nested).unwrap(),
            "Detected mirrord being run within mirrord"
        );
        assert_eq!(
            cause("Error:   × invalid api key format\n\n").unwrap(),
            "invalid api key format"
        );
        assert_eq!(
            cause("Error:   × mirrord operator was not found in the cluster.\n").unwrap(),
            "mirrord operator was not found in the cluster."
        );
    }

    #[test]
    fn crlf_and_a_missing_final_newline_do_not_matter() {
        let crlf = NO_CLUSTER.replace('\n', "\r\n");
        assert_eq!(cause(&crlf), cause(NO_CLUSTER));
        assert_eq!(
            cause(
                "Error:   × Failed to create mirrord-agent: ApiError: the server could not find the"
            ),
            Some("Failed to create mirrord-agent: ApiError: the server could not find the".into())
        );
    }

    #[test]
    fn no_graphics_json_and_clap_forms() {
        // NO_GRAPHICS=1 (captured shape): the message on one line, then the narrated extras.
        let narrated = "Error: Failed to create Kubernetes API client: boom (os error 2))
    Diagnostic severity: error
diagnostic help: Please check that Kubernetes is configured correctly
";
        assert_eq!(
            cause(narrated).unwrap(),
            "Failed to create Kubernetes API client: boom (os error 2))"
        );
        let json = r#"Error: {"message": "Failed to list targets","severity": "error","causes": ["kube error"],"help": "Check","labels": [],"related": []}"#;
        assert_eq!(cause(json).unwrap(), "Failed to list targets: kube error");
        let clap = "error: unexpected argument '--bogus' found

Usage: mirrord exec [OPTIONS] <BINARY> [BINARY_ARGS]...

For more information, try '--help'.
";
        assert_eq!(cause(clap).unwrap(), "unexpected argument '--bogus' found");
    }

    #[test]
    fn after_ready_only_the_graphical_form_counts() {
        let app = "Ready!\nerror: the app's own complaint\nError: also the app's\n";
        assert_eq!(graphical_cause(app), None);
        let execve = "Ready!\nError:   × Failed to execute binary `x`: ENOEXEC\n  help: …\n";
        assert_eq!(
            graphical_cause(execve).unwrap(),
            "Failed to execute binary `x`: ENOEXEC"
        );
        assert_eq!(graphical_cause(NO_CLUSTER), cause(NO_CLUSTER));
    }

    #[test]
    fn text_without_a_report_has_no_cause() {
        assert_eq!(cause(""), None);
        assert_eq!(cause(PROGRESS), None);
        assert_eq!(cause("Ready!\napp says hi\n"), None);
        assert_eq!(cause("Error:   × \n"), None);
    }
}
