//! Comparing definitions with pins: each entry of a `tools/list` response ([`ListCheck`]) and
//! each `tools/call` ([`check_call`]). Pure: the caller reads and writes shared data.

use super::store::Def;
use super::{definition_hash, OnDrift, PinConfig, Unpinned};
use crate::host::ReadError;
use std::cell::Cell;
use std::collections::BTreeMap;

/// Most `drift` entries one audit record carries; more set `drift_truncated`.
pub const MAX_DRIFT_ENTRIES: usize = 32;

/// One drifted tool, as the audit record's `drift` array writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftEntry {
    /// The tool's name as the server sent it.
    pub tool: String,
    /// Its current [`definition_hash`]; `None` when it could not be hashed (or one list showed
    /// two different definitions under the name).
    pub hash: Option<String>,
    /// The pin it was compared with; `None` when there was none to compare with (an entry
    /// that could not be hashed on its first sighting under `learn_pins`).
    pub pin: Option<String>,
}

/// Why pins deny a `tools/call` (JSON-RPC -32003; the `mcp_guard.denials` reason and the audit
/// record's `refusal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinDenial {
    /// The tool's current definition differs from its pin (`on_drift: hide`): `tool_drift`.
    Drift,
    /// The tool has no pin (`unpinned: hide`): `tool_unpinned`.
    Unpinned,
    /// The tool's current definition is not known: no `tools/list` of its server showed it since
    /// Envoy started: `tool_unverified`.
    Unverified,
    /// What pins know of the tool could not be read from shared data (fail closed): counted as
    /// `tool_unverified`.
    Unread,
}

impl PinDenial {
    /// The reason label: `tool_drift`, `tool_unpinned` or `tool_unverified`.
    pub fn reason(self) -> &'static str {
        match self {
            PinDenial::Drift => "tool_drift",
            PinDenial::Unpinned => "tool_unpinned",
            PinDenial::Unverified | PinDenial::Unread => "tool_unverified",
        }
    }

    /// The JSON-RPC error message for a call of `tool`.
    pub fn message(self, tool: &str) -> String {
        let tool = serde_json::Value::String(tool.to_owned());
        match self {
            PinDenial::Drift => format!(
                "Tool {tool} is not allowed: its definition changed since it was pinned \
                 (tool_drift); it stays unavailable until the pin is updated"
            ),
            PinDenial::Unpinned => {
                format!("Tool {tool} is not allowed: it has no pinned definition (tool_unpinned)")
            }
            PinDenial::Unverified => format!(
                "Tool {tool} is not allowed yet: mcp-guard has not seen its current definition \
                 (tool_unverified); list the tools (tools/list) first, then call it"
            ),
            PinDenial::Unread => format!(
                "Tool {tool} is not allowed: mcp-guard could not read what it knows of the \
                 tool's definition (tool_unverified); retry later"
            ),
        }
    }
}

/// What pins say about one `tools/call`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Why it is denied (before the policy mode: dry-run forwards it as `dry_run_deny`).
    pub denial: Option<PinDenial>,
    /// Its drift, when its last seen definition differs from its pin (recorded on the call).
    pub drift: Option<DriftEntry>,
}

/// Whether a `tools/call` of `tool` needs the tool's last seen definition ([`check_call`]'s
/// `def`): only with a pin source (a configured pin for it, or `learn_pins`).
pub fn needs_def(config: &PinConfig, tool: &str) -> bool {
    config.active() && (config.configured(tool).is_some() || config.learn_pins)
}

/// The pin check of a `tools/call` of `tool` (pins active). `def` is the tool's last seen
/// definition ([`super::store::def`], asked only when [`needs_def`]): a [`ReadError`] denies
/// when pins can deny (fail closed), and only then.
///
/// - a configured pin is the pin; else, with `learn_pins`, the pin learned when the definition
///   was seen; else the tool is unpinned (`unpinned: hide` denies, `tool_unpinned`);
/// - no definition seen since start: denied (`tool_unverified`) when `on_drift` is `hide` (or,
///   for a tool without a configured pin, when `unpinned` is `hide`);
/// - a definition that differs from the pin, or could not be hashed: drift, denied
///   (`tool_drift`) when `on_drift` is `hide`, recorded either way.
pub fn check_call(
    config: &PinConfig,
    tool: &str,
    def: impl FnOnce() -> Result<Option<Def>, ReadError>,
) -> Checked {
    let hide_drift = config.on_drift == OnDrift::Hide;
    let hide_unpinned = config.unpinned == Unpinned::Hide;
    let deny = |d: PinDenial, when: bool| Checked {
        denial: when.then_some(d),
        drift: None,
    };
    if !config.active() {
        return Checked::default();
    }
    let configured = config.configured(tool);
    if !needs_def(config, tool) {
        return deny(PinDenial::Unpinned, hide_unpinned);
    }
    let def = match def() {
        Ok(def) => def,
        Err(ReadError) => return deny(PinDenial::Unread, config.can_deny()),
    };
    let Some(def) = def else {
        let when = hide_drift || (configured.is_none() && hide_unpinned);
        return deny(PinDenial::Unverified, when);
    };
    let pin = match configured {
        Some(pin) => pin.to_owned(),
        None => match def.learned {
            Some(pin) => pin,
            None => return deny(PinDenial::Unpinned, hide_unpinned),
        },
    };
    if def.hash.as_deref() == Some(pin.as_str()) {
        return Checked::default();
    }
    Checked {
        denial: hide_drift.then_some(PinDenial::Drift),
        drift: Some(DriftEntry {
            tool: tool.to_owned(),
            hash: def.hash,
            pin: Some(pin),
        }),
    }
}

/// What pins say about one `tools/list` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Its definition matches its pin (or is its first sighting under `learn_pins`).
    Match,
    /// Its definition differs from its pin, or could not be hashed.
    Drift(DriftEntry),
    /// It has no pin.
    Unpinned,
    /// Its learned pin could not be read (fail closed: hidden when pins can hide).
    Unverified,
}

/// The pin check of one `tools/list` response of one server: [`ListCheck::entry`] decides each
/// entry as the curation pass meets it (recording what was seen), then the caller stores what
/// was learned ([`ListCheck::first_sightings`], [`ListCheck::defs`]) and records the drift
/// ([`ListCheck::drift`]).
///
/// An entry is hashed only when a pin source exists ([`PinConfig::pinning`]). Bookkeeping uses
/// `Cell`s (the curation pass decides through a shared reference), never a `RefCell`, so it
/// cannot panic.
pub struct ListCheck<'c> {
    config: &'c PinConfig,
    /// The learned pins of the server, read before the pass (with `learn_pins` only).
    learned: Result<BTreeMap<String, String>, ReadError>,
    /// Nothing is hidden (policy dry-run): drift is recorded only.
    dry_run: bool,
    /// First sightings in this response (`learn_pins`): tool to hash.
    new_pins: Cell<BTreeMap<String, String>>,
    /// The definition each tool showed (two different ones under one name: no hash).
    defs: Cell<BTreeMap<String, Def>>,
    /// Every drifted entry, in list order.
    drift: Cell<Vec<DriftEntry>>,
}

impl<'c> ListCheck<'c> {
    /// A check under `config` (active); `learned` is the server's learned pins, read once per
    /// response (ignored without `learn_pins`); `dry_run`: nothing is hidden.
    pub fn new(
        config: &'c PinConfig,
        learned: Result<BTreeMap<String, String>, ReadError>,
        dry_run: bool,
    ) -> ListCheck<'c> {
        ListCheck {
            config,
            learned,
            dry_run,
            new_pins: Cell::new(BTreeMap::new()),
            defs: Cell::new(BTreeMap::new()),
            drift: Cell::new(Vec::new()),
        }
    }

    /// The status of the entry `name` whose JSON text is `entry`, recorded.
    pub fn status(&self, name: &str, entry: &str) -> Status {
        let config = self.config;
        if !config.pinning() {
            return Status::Unpinned;
        }
        let hash = definition_hash(entry).ok();
        let mut new_pins = self.new_pins.take();
        let learned = if config.configured(name).is_some() || !config.learn_pins {
            Ok(None)
        } else {
            match &self.learned {
                Err(ReadError) => Err(ReadError),
                Ok(map) => Ok(map.get(name).or_else(|| new_pins.get(name)).cloned()),
            }
        };
        let status = match (config.configured(name), &learned) {
            (Some(pin), _) => compare(name, hash.as_deref(), Some(pin)),
            (None, Err(ReadError)) => Status::Unverified,
            (None, Ok(Some(pin))) => compare(name, hash.as_deref(), Some(pin)),
            (None, Ok(None)) if config.learn_pins => match &hash {
                // First sighting: it becomes the pin.
                Some(h) => {
                    new_pins.insert(name.to_owned(), h.clone());
                    Status::Match
                }
                None => compare(name, None, None),
            },
            (None, Ok(None)) => Status::Unpinned,
        };
        let learned_pin = learned
            .ok()
            .flatten()
            .or_else(|| new_pins.get(name).cloned());
        self.new_pins.set(new_pins);
        let mut defs = self.defs.take();
        match defs.get_mut(name) {
            Some(def) => {
                if def.hash != hash {
                    def.hash = None; // two definitions under one name: none was "the" one
                }
            }
            None => {
                let def = Def {
                    hash,
                    learned: learned_pin,
                };
                defs.insert(name.to_owned(), def);
            }
        }
        self.defs.set(defs);
        if let Status::Drift(d) = &status {
            let mut drift = self.drift.take();
            drift.push(d.clone());
            self.drift.set(drift);
        }
        status
    }

    /// Whether an entry with `status` stays in the list.
    pub fn keeps(&self, status: &Status) -> bool {
        if self.dry_run {
            return true;
        }
        match status {
            Status::Match => true,
            Status::Drift(_) | Status::Unverified => self.config.on_drift == OnDrift::Audit,
            Status::Unpinned => self.config.unpinned == Unpinned::Allow,
        }
    }

    /// [`ListCheck::status`] then [`ListCheck::keeps`].
    pub fn entry(&self, name: &str, entry: &str) -> bool {
        let status = self.status(name, entry);
        self.keeps(&status)
    }

    /// The first sightings to learn (`learn_pins`), taken.
    pub fn first_sightings(&self) -> Vec<(String, String)> {
        self.new_pins.take().into_iter().collect()
    }

    /// After [`super::store::learn_first`]: tools whose stored pin is not the one this response
    /// assumed (another worker learned another first definition in between) drift against it.
    /// Returns whether any did (the list, decided before, showed them: the caller checks it
    /// again against the stored pins).
    /// `new`: the first sightings offered; one absent from `stored` did not fit the store's
    /// bounds and has no learned pin (its later calls are unpinned).
    pub fn settle_learned(
        &self,
        new: &[(String, String)],
        stored: &BTreeMap<String, String>,
    ) -> bool {
        let mut lost = false;
        let mut defs = self.defs.take();
        let mut drift = self.drift.take();
        for (tool, def) in defs.iter_mut() {
            let offered = new.iter().any(|(t, _)| t == tool);
            if offered && !stored.contains_key(tool) {
                def.learned = None;
            }
            if let Some(pin) = stored.get(tool) {
                if def.learned.as_deref() != Some(pin.as_str()) && def.learned.is_some() {
                    def.learned = Some(pin.clone());
                    if def.hash.as_deref() != Some(pin.as_str()) {
                        lost = true;
                        drift.push(DriftEntry {
                            tool: tool.clone(),
                            hash: def.hash.clone(),
                            pin: Some(pin.clone()),
                        });
                    }
                }
            }
        }
        self.defs.set(defs);
        self.drift.set(drift);
        lost
    }

    /// The learned pins could not be stored: no definition of this response has a learned pin.
    pub fn unlearned(&self, tools: &[(String, String)]) {
        let mut defs = self.defs.take();
        for (tool, def) in defs.iter_mut() {
            if tools.iter().any(|(t, _)| t == tool) {
                def.learned = None;
            }
        }
        self.defs.set(defs);
    }

    /// The definitions seen, to record ([`super::store::record_defs`]), taken.
    pub fn defs(&self) -> Vec<(String, Def)> {
        self.defs.take().into_iter().collect()
    }

    /// Every drifted entry seen, in list order, taken.
    pub fn drift(&self) -> Vec<DriftEntry> {
        self.drift.take()
    }
}

fn compare(name: &str, hash: Option<&str>, pin: Option<&str>) -> Status {
    match (hash, pin) {
        (Some(h), Some(p)) if h == p => Status::Match,
        _ => Status::Drift(DriftEntry {
            tool: name.to_owned(),
            hash: hash.map(str::to_owned),
            pin: pin.map(str::to_owned),
        }),
    }
}

#[cfg(test)]
mod tests;
