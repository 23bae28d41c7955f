//! The pipelines of `pipelines/`, built into the binary, and the `${VAR}` substitution that
//! turns one into a gst-launch description.
//!
//! A file opens with `#` comment lines; those of the form `#   NAME = default  help` declare
//! its variables. Everything else is the description, with `${NAME}` where a value goes.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

/// One pipeline file.
pub struct Preset {
    /// File name without `.pipeline`.
    pub name: &'static str,
    /// The whole file.
    pub text: &'static str,
}

macro_rules! presets {
    ($($name:literal),* $(,)?) => {
        &[$(Preset { name: $name, text: include_str!(concat!("../../pipelines/", $name, ".pipeline")) }),*]
    };
}

/// Every file of `pipelines/`.
pub const PRESETS: &[Preset] = presets![
    "publish-test",
    "publish-camera",
    "publish-file",
    "play-participant",
    "play-mix",
    "record-mix-mp4",
    "record-mix-webm",
    "restream-mix",
];

/// A declared variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub default: String,
    pub help: String,
}

impl Preset {
    /// The preset called `name`.
    pub fn find(name: &str) -> anyhow::Result<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name).with_context(|| {
            let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
            format!("no pipeline {name:?}; there are: {}", names.join(", "))
        })
    }

    /// The first comment line: what the pipeline does.
    pub fn summary(&self) -> &str {
        self.text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches('#')
            .trim()
    }

    /// The declared variables, in order.
    pub fn variables(&self) -> Vec<Variable> {
        self.text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|line| {
                let (name, rest) = line.trim_start_matches('#').split_once('=')?;
                let name = name.trim();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    return None;
                }
                let rest = rest.trim();
                let (default, help) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                Some(Variable {
                    name: name.into(),
                    default: default.into(),
                    help: help.trim().into(),
                })
            })
            .collect()
    }

    /// The description with every variable filled: `values` over the declared defaults.
    /// Unknown names in `values` are an error (a typo would otherwise be silently ignored).
    pub fn render(&self, values: &BTreeMap<String, String>) -> anyhow::Result<String> {
        let declared = self.variables();
        if let Some(unknown) = values
            .keys()
            .find(|k| !declared.iter().any(|v| &v.name == *k))
        {
            let names: Vec<_> = declared.iter().map(|v| v.name.as_str()).collect();
            bail!(
                "pipeline {} has no variable {unknown}; it has: {}",
                self.name,
                names.join(", ")
            );
        }
        let mut description: String = self
            .text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for var in &declared {
            let value = values.get(&var.name).unwrap_or(&var.default);
            description = description.replace(&format!("${{{}}}", var.name), value);
        }
        if let Some(start) = description.find("${") {
            bail!(
                "pipeline {} uses an undeclared variable near {:?}",
                self.name,
                &description[start..]
            );
        }
        Ok(description)
    }
}

/// Parses `NAME=value` arguments.
pub fn parse_assignment(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{arg:?} is not of the form NAME=value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_declares_what_it_uses_and_renders() {
        for preset in PRESETS {
            assert!(
                !preset.summary().is_empty(),
                "{} has no summary line",
                preset.name
            );
            assert!(
                preset.variables().iter().any(|v| v.name == "SERVER"),
                "{}",
                preset.name
            );
            let text = preset.render(&BTreeMap::new()).unwrap();
            assert!(!text.contains("${"), "{}", preset.name);
        }
    }

    #[test]
    fn every_file_of_pipelines_is_built_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".pipeline").map(str::to_owned))
            .collect();
        files.sort();
        let mut built_in: Vec<String> = PRESETS.iter().map(|p| p.name.to_owned()).collect();
        built_in.sort();
        assert_eq!(
            files, built_in,
            "add new pipelines/ files to PRESETS so they are tested"
        );
    }

    #[test]
    fn values_override_defaults_and_typos_are_refused() {
        let preset = Preset::find("publish-test").unwrap();
        let values = BTreeMap::from([("ROOM".to_owned(), "other".to_owned())]);
        assert!(preset.render(&values).unwrap().contains("room=other"));
        let typo = BTreeMap::from([("ROMO".to_owned(), "x".to_owned())]);
        assert!(
            preset
                .render(&typo)
                .unwrap_err()
                .to_string()
                .contains("no variable ROMO")
        );
        assert!(Preset::find("nope").is_err());
    }
}
