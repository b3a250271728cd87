//! The configuration file (`--config FILE`, TOML) and `--print-config`.
//!
//! Each key of the file is the long name of a command-line flag and each value its
//! argument (`scan-ports = 20`, `home-net = ["198.18.0.0/15"]`, `probes = true`), so the
//! file and the flags share one set of names, one parser and one set of error messages.
//! Flags given on the command line override the file (a list flag replaces the file's
//! list). Each key is checked on its own, so an error names the file, the key and the
//! problem in one line. `--print-config` writes the effective configuration in the same
//! format, each key under its flag's help, so its output is a valid, documented file.

use std::{
    ffi::OsString,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use clap::{Arg, ArgAction, ArgMatches, Command, parser::ValueSource};

/// Flags that are not settings: never read from a file, never printed.
const NOT_SETTINGS: [&str; 5] = ["config", "print-config", "generate", "help", "version"];

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config file {path}: {message}")]
    Read { path: PathBuf, message: String },
    /// The file is not TOML.
    #[error("config file {path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key is unknown or its value is not acceptable.
    #[error("config file {path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Reads `path` and returns the command-line arguments it stands for, each key checked
/// against `cmd` on its own. Keys whose flag `given` (the command line, parsed alone)
/// has already are left out: the command line overrides the file.
pub fn file_args(
    path: &Path,
    cmd: &Command,
    given: &ArgMatches,
) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    args_of(path, &text, cmd, given)
}

/// [`file_args`] on the text of the file.
pub fn args_of(
    path: &Path,
    text: &str,
    cmd: &Command,
    given: &ArgMatches,
) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
        // One line: toml's messages come with a source excerpt below the first line.
        let message = err.message().to_owned();
        let line = err
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        ConfigError::Syntax {
            path: path.to_owned(),
            message: match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            },
        }
    })?;
    let key_error = |key: &str, message: String| ConfigError::Key {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let mut args = Vec::new();
    for (key, value) in &table {
        let arg = settings(cmd)
            .find(|a| a.get_long() == Some(key.as_str()))
            .ok_or_else(|| key_error(key, unknown_key(cmd, key)))?;
        let words = words_of(arg, value).map_err(|message| key_error(key, message))?;
        // Check this key alone, with the flag's own parser.
        let mut alone = vec![OsString::from(cmd.get_name())];
        alone.extend(words.iter().cloned());
        if let Err(err) = cmd.clone().try_get_matches_from(alone) {
            return Err(key_error(key, clap_message(&err)));
        }
        if given.value_source(arg.get_id().as_str()) != Some(ValueSource::CommandLine) {
            args.extend(words);
        }
    }
    Ok(args)
}

/// The settings among `cmd`'s arguments: the long flags, less [`NOT_SETTINGS`].
fn settings(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long()
            .is_some_and(|long| !NOT_SETTINGS.contains(&long))
    })
}

/// True for flags that take no value (`--probes`).
fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// True for flags that may be repeated (`--iface`).
fn is_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// The command-line words for one key's value: `--key=value` for each value.
fn words_of(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    if is_switch(arg) {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![format!("--{long}").into()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!("expects true or false, not {}", describe(other))),
        };
    }
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "expects a string or a number, not {}",
            describe(other)
        )),
    };
    let values = match value {
        toml::Value::Array(items) if is_list(arg) => {
            items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?
        }
        toml::Value::Array(_) => return Err("takes one value, not a list".to_owned()),
        other => vec![scalar(other)?],
    };
    Ok(values
        .into_iter()
        .map(|v| format!("--{long}={v}").into())
        .collect())
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(_) => "a table".to_owned(),
        toml::Value::Array(_) => "a list".to_owned(),
        toml::Value::Datetime(_) => "a date".to_owned(),
        other => format!("{other}"),
    }
}

/// The message for an unknown key, with the closest known one when there is one.
fn unknown_key(cmd: &Command, key: &str) -> String {
    let closest = settings(cmd)
        .filter_map(Arg::get_long)
        .map(|long| (edit_distance(key, long), long))
        .min();
    match closest {
        Some((distance, long)) if distance <= 3 => {
            format!("unknown key (did you mean `{long}`?)")
        }
        _ => "unknown key (`probe-detector --print-config` lists every key)".to_owned(),
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// clap's message for a bad value, on one line and without its `error:` prefix.
fn clap_message(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.trim_start_matches("error: ").to_owned()
}

/// The effective configuration as a TOML file: every setting of `cmd` with its value in
/// `matches` (defaults included), under its help as comments. Unset settings without a
/// default are shown commented out.
pub fn render(cmd: &Command, matches: &ArgMatches, file: Option<&Path>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} configuration in effect: defaults, {}then the command line.",
        cmd.get_name(),
        file.map_or_else(String::new, |f| format!("{}, ", f.display()))
    );
    let _ = writeln!(
        out,
        "# Each key is a command-line flag; use this as a --config file."
    );
    for arg in settings(cmd) {
        let long = arg.get_long().unwrap_or_default();
        out.push('\n');
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        for line in help.lines() {
            for wrapped in wrap(line, 86) {
                let _ = writeln!(out, "# {wrapped}");
            }
        }
        let choices: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect();
        if !choices.is_empty() && !is_switch(arg) {
            let _ = writeln!(out, "# One of: {}.", choices.join(", "));
        }
        let raw: Vec<String> = matches
            .get_raw(arg.get_id().as_str())
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = if is_switch(arg) {
            Some(raw.first().map_or("false", String::as_str).to_owned())
        } else if is_list(arg) {
            Some(format!(
                "[{}]",
                raw.iter()
                    .map(|v| toml_scalar(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            raw.first().map(|v| toml_scalar(v))
        };
        match value {
            Some(value) => {
                let _ = writeln!(out, "{long} = {value}");
            }
            None => {
                let example = arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map_or_else(|| "VALUE".to_owned(), ToString::to_string);
                let _ = writeln!(out, "# {long} = {}   (not set)", toml_scalar(&example));
            }
        }
    }
    out
}

/// `text` in lines of at most `width` characters, broken between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.is_empty() => line.push_str(word),
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// A value as TOML: a number when it reads as one, else a quoted string.
fn toml_scalar(value: &str) -> String {
    let number = value.parse::<i64>().is_ok()
        || value
            .parse::<f64>()
            .is_ok_and(|f| f.is_finite() && value.contains('.'));
    if number {
        value.to_owned()
    } else {
        toml::Value::String(value.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::*;

    /// A small command shaped like probe-detector's.
    #[derive(Debug, Parser)]
    #[command(name = "probe-detector", args_override_self = true)]
    struct Demo {
        /// Read settings from this TOML file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the configuration.
        #[arg(long)]
        print_config: bool,
        /// Distinct ports.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..))]
        scan_ports: u16,
        /// Window, seconds.
        #[arg(long, default_value = "60")]
        scan_window: f64,
        /// Networks.
        #[arg(long = "home-net")]
        home_nets: Vec<String>,
        /// Report probes.
        #[arg(long)]
        probes: bool,
        /// A path.
        #[arg(long, value_name = "PATH")]
        attack_list: Option<PathBuf>,
    }

    fn parse(file: &str, cli: &[&str]) -> Result<(Demo, String), ConfigError> {
        let cmd = Demo::command();
        let argv: Vec<OsString> = std::iter::once("probe-detector")
            .chain(cli.iter().copied())
            .map(OsString::from)
            .collect();
        let given = cmd.clone().try_get_matches_from(&argv).unwrap();
        let mut all = vec![argv[0].clone()];
        all.extend(args_of(Path::new("demo.toml"), file, &cmd, &given)?);
        all.extend(argv[1..].iter().cloned());
        let matches = cmd.clone().try_get_matches_from(all).unwrap();
        let rendered = render(&cmd, &matches, Some(Path::new("demo.toml")));
        Ok((
            <Demo as clap::FromArgMatches>::from_arg_matches(&matches).unwrap(),
            rendered,
        ))
    }

    /// A TOML value of any shape, plausible or not.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (0u32..100_000).prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            any::<bool>().prop_map(|b| b.to_string()),
            "[ -~]{0,16}".prop_map(|s| format!("{s:?}")),
            proptest::collection::vec("[0-9./:a-f]{0,20}", 0..4).prop_map(|v| format!("{v:?}")),
            Just("{ a = 1 }".to_owned()),
            Just("2026-11-21T07:00:00Z".to_owned()),
            "[^\n]{0,12}",
        ]
    }

    proptest::proptest! {
        /// Any file is either taken whole (and then the whole command line parses) or
        /// refused with one line naming the file: never a panic, never a half-applied file.
        #[test]
        fn any_file_is_taken_whole_or_refused_in_one_line(
            entries in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::strategy::Just("scan-ports".to_owned()),
                        proptest::strategy::Just("scan-window".to_owned()),
                        proptest::strategy::Just("home-net".to_owned()),
                        proptest::strategy::Just("probes".to_owned()),
                        proptest::strategy::Just("attack-list".to_owned()),
                        proptest::strategy::Just("config".to_owned()),
                        "[a-z][a-z-]{0,12}",
                    ],
                    value(),
                ),
                0..6,
            ),
            junk in "[^\\x00]{0,40}",
            with_junk in proptest::bool::ANY,
        ) {
            let mut file: String = entries
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            if with_junk {
                file.push_str(&junk);
            }
            // parse() unwraps the final command line: accepted keys must make a valid one.
            if let Err(err) = parse(&file, &[]) {
                let text = err.to_string();
                proptest::prop_assert!(text.starts_with("config file demo.toml: "), "{}", text);
                proptest::prop_assert_eq!(text.lines().count(), 1, "{}", text);
            }
        }
    }

    #[test]
    fn the_file_sets_and_the_command_line_overrides() {
        let file = "scan-ports = 20\nscan-window = 2.5\nhome-net = [\"198.18.0.0/15\", \"2001:db8::/32\"]\nprobes = true\n";
        let (demo, _) = parse(file, &[]).unwrap();
        assert_eq!(demo.scan_ports, 20);
        assert_eq!(demo.scan_window, 2.5);
        assert_eq!(demo.home_nets, ["198.18.0.0/15", "2001:db8::/32"]);
        assert!(demo.probes);
        // A flag on the command line wins; a list on the command line replaces the file's.
        let (demo, _) = parse(file, &["--scan-ports", "5", "--home-net", "198.19.0.0/16"]).unwrap();
        assert_eq!(demo.scan_ports, 5);
        assert_eq!(demo.home_nets, ["198.19.0.0/16"]);
        assert_eq!(demo.scan_window, 2.5);
    }

    #[test]
    fn bad_keys_and_values_name_the_key_in_one_line() {
        let err = |file: &str| parse(file, &[]).unwrap_err().to_string();
        assert_eq!(
            err("scan-prots = 3\n"),
            "config file demo.toml: key `scan-prots`: unknown key (did you mean `scan-ports`?)"
        );
        // --config is not a setting: a file cannot name another file.
        assert!(
            err("config = \"x\"\n").starts_with("config file demo.toml: key `config`: unknown key")
        );
        let bad = err("scan-ports = 1\n");
        assert!(
            bad.starts_with("config file demo.toml: key `scan-ports`: invalid value '1'"),
            "{bad}"
        );
        assert!(!bad.contains('\n'));
        assert_eq!(
            err("scan-ports = [3, 4]\n"),
            "config file demo.toml: key `scan-ports`: takes one value, not a list"
        );
        assert_eq!(
            err("probes = \"yes\"\n"),
            "config file demo.toml: key `probes`: expects true or false, not \"yes\""
        );
        let syntax = err("scan-ports = \n");
        assert!(
            syntax.starts_with("config file demo.toml: not valid TOML: line 1:"),
            "{syntax}"
        );
        assert!(!syntax.contains('\n'), "{syntax}");
    }

    #[test]
    fn the_printed_configuration_reads_back_the_same() {
        let (_, printed) = parse(
            "scan-ports = 20\nhome-net = [\"198.18.0.0/15\"]\n",
            &["--probes"],
        )
        .unwrap();
        assert!(
            printed.contains("\n# Distinct ports\nscan-ports = 20\n"),
            "{printed}"
        );
        assert!(
            printed.contains("\nhome-net = [\"198.18.0.0/15\"]\n"),
            "{printed}"
        );
        assert!(printed.contains("\nprobes = true\n"), "{printed}");
        assert!(
            printed.contains("\n# attack-list = \"PATH\"   (not set)\n"),
            "{printed}"
        );
        assert!(!printed.contains("print-config ="));
        let (_, again) = parse(&printed, &[]).unwrap();
        assert_eq!(
            printed.lines().skip(1).collect::<Vec<_>>(),
            again.lines().skip(1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn suggestions_use_the_edit_distance() {
        assert_eq!(edit_distance("scan-prots", "scan-ports"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
