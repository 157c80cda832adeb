//! Reads a binary's `--help` (clap's output, in any of its layouts: one line
//! per option, description on the next line, or long help with blank lines
//! between options) and lists the options and arguments that have no
//! description, for it and for every subcommand.
//!
//! The simulator's tests use this same file (`#[path]`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Every option or argument, in `bin`'s help and its subcommands' (to any
/// depth), that has no description: `"csms-sim fleet: --chargers <CHARGERS>"`.
pub fn undocumented(bin: &Path) -> Vec<String> {
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found = Vec::new();
    walk(bin, &name, &mut Vec::new(), &mut found);
    found
}

fn walk(bin: &Path, name: &str, path: &mut Vec<String>, found: &mut Vec<String>) {
    let output = Command::new(bin)
        .args(path.iter())
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{} does not run: {e}", bin.display()));
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let shown = std::iter::once(name.to_owned())
        .chain(path.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        output.status.success() && help.contains("Usage:"),
        "`{shown} --help` failed: {}{}",
        help,
        String::from_utf8_lossy(&output.stderr)
    );
    for option in options_without_description(&help) {
        found.push(format!("{shown}: {option}"));
    }
    for sub in subcommands(&help) {
        path.push(sub);
        walk(bin, name, path, found);
        path.pop();
    }
}

/// The names in the `Commands:` section, but `help`.
pub fn subcommands(help: &str) -> Vec<String> {
    section(help, "Commands:")
        .iter()
        .filter(|line| indent(line) == 2)
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The options and arguments (as their help names them) with nothing but
/// `[env: …]`, `[default: …]` and the like to say what they are.
pub fn options_without_description(help: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for heading in ["Options:", "Arguments:"] {
        let lines = section(help, heading);
        let mut i = 0;
        while i < lines.len() {
            let header = lines[i];
            i += 1;
            let trimmed = header.trim_start();
            let is_entry = indent(header) <= 6
                && (trimmed.starts_with('-')
                    || trimmed.starts_with('<')
                    || trimmed.starts_with('['));
            if !is_entry {
                continue;
            }
            // The spec ends at the first run of two spaces; the rest of the
            // line, if any, is where the description starts.
            let (spec, rest) = match trimmed.find("  ") {
                Some(at) => (&trimmed[..at], &trimmed[at..]),
                None => (trimmed, ""),
            };
            let mut text = rest.to_owned();
            while i < lines.len() {
                let line = lines[i];
                let next = line.trim_start();
                let next_is_entry = !next.is_empty()
                    && indent(line) <= 6
                    && (next.starts_with('-') || next.starts_with('<') || next.starts_with('['));
                if next_is_entry {
                    break;
                }
                i += 1;
                if next == "Possible values:" {
                    // What follows lists values, not what the option is.
                    while i < lines.len() && indent(lines[i]) > 6 {
                        i += 1;
                    }
                    continue;
                }
                text.push(' ');
                text.push_str(next);
            }
            if strip_annotations(&text).trim().is_empty() {
                missing.push(spec.to_owned());
            }
        }
    }
    missing
}

/// The lines under `heading` up to the next heading (an unindented line).
fn section<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|line| line.trim_end() != heading)
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with(' '))
        .collect()
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Removes clap's `[env: …]`, `[default: …]`, `[possible values: …]` and
/// `[aliases: …]` notes.
fn strip_annotations(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        let note = &rest[start + 1..];
        let is_note = [
            "env:",
            "default:",
            "possible values:",
            "aliases:",
            "short aliases:",
        ]
        .iter()
        .any(|p| note.starts_with(p));
        match (is_note, note.find(']')) {
            (true, Some(end)) => {
                out.push_str(&rest[..start]);
                rest = &note[end + 1..];
            }
            _ => {
                out.push_str(&rest[..=start]);
                rest = note;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The reader itself, on each of clap's layouts, so a check that finds
/// nothing has not simply read nothing.
pub fn check_the_reader() {
    let one_line = "Usage: x [OPTIONS]\n\nOptions:\n  -v, --verbose...  More log output\n      --chargers <CHARGERS>  [default: 10]\n      --quiet\n  -h, --help        Print help\n";
    assert_eq!(
        options_without_description(one_line),
        ["--chargers <CHARGERS>", "--quiet"]
    );
    let next_line = "Usage: x [OPTIONS]\n\nOptions:\n      --url <URL>\n          Central system URL [env: X=] [default: ws://h]\n      --chargers <CHARGERS>\n          [default: 10]\n      --id-prefix <ID_PREFIX>\n          [default: SIM-]\n  -h, --help\n          Print help\n";
    assert_eq!(
        options_without_description(next_line),
        ["--chargers <CHARGERS>", "--id-prefix <ID_PREFIX>"]
    );
    let long = "Usage: x [OPTIONS] [COMMAND]\n\nCommands:\n  serve  Run it\n  help   Print this message\n\nArguments:\n  <ID>\n          \n          [env: ID=]\n\nOptions:\n      --mode <MODE>\n          What to do\n\n          Possible values:\n          - a: One\n          - b: Two\n          \n          [default: a]\n\n      --other <OTHER>\n          Possible values:\n          - a: One\n          \n          [env: O=]\n\n  -h, --help\n          Print help (see a summary with '-h')\n";
    assert_eq!(
        options_without_description(long),
        ["--other <OTHER>", "<ID>"]
    );
    assert_eq!(subcommands(long), ["serve"]);
}
