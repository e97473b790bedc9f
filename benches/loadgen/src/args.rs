//! A tiny `--key value` argument parser (no external dependency, nothing to learn).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Parsed `--key value` pairs; every key must be read, or [`Args::finish`] complains.
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses `args` (without the program name and the mode).
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut it = args.peekable();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --key, got {a:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            values.insert(key.to_owned(), value);
        }
        Ok(Self { values })
    }

    /// The value of `--key`, or `default`.
    pub fn get<T: FromStr>(&mut self, key: &str, default: T) -> Result<T, String> {
        match self.values.remove(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: cannot parse {v:?}")),
        }
    }

    /// An optional string value.
    pub fn opt(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// A duration in (fractional) seconds.
    pub fn secs(&mut self, key: &str, default: f64) -> Result<Duration, String> {
        let s: f64 = self.get(key, default)?;
        Duration::try_from_secs_f64(s).map_err(|e| format!("--{key}: {e}"))
    }

    /// Fails on any key that no mode asked for (typos).
    pub fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(k) => Err(format!("unknown option --{k}")),
        }
    }
}
