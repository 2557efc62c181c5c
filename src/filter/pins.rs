//! Tool pins on the response path of a [`Stream`] (`crate::pins`): which list responses must be
//! read, the per-response [`ListCheck`], and storing what it saw.

use super::Stream;
use crate::config::Config;
use crate::curation::ListKind;
use crate::host::Host;
use crate::metrics::Metric;
use crate::pins::{self, DriftEntry, ListCheck};
use crate::policy::Mode;
use std::collections::BTreeMap;

impl Stream {
    /// Whether a list response of `kind` (`None`: a server stream, which may carry any list) must
    /// be read, and so is refused when it cannot be (fail closed): under `curate_lists`, and,
    /// for `tools/list`, whenever tool pins are active, curation or not.
    pub(super) fn must_read(&self, kind: Option<ListKind>) -> bool {
        self.config.curate_lists
            || (self.config.pins.active() && kind.is_none_or(|k| k == ListKind::Tools))
    }

    /// The pin check of one `tools/list` response (`None` for another list, or pins inactive).
    /// With `learn_pins`, the server's learned pins are read once here; a failed read makes
    /// every tool without a configured pin unverified (hidden under `on_drift: hide`). In
    /// policy dry-run nothing is hidden.
    pub(super) fn list_check<'c>(
        &self,
        host: &mut dyn Host,
        config: &'c Config,
        kind: ListKind,
    ) -> Option<ListCheck<'c>> {
        let pins = &config.pins;
        if kind != ListKind::Tools || !pins.active() {
            return None;
        }
        let learned = if pins.learn_pins {
            let read = pins::learned_pins(host.shared(), &self.facts.server_id);
            if read.is_err() {
                log::warn!("mcp-guard: could not read the learned tool pins");
            }
            read
        } else {
            Ok(BTreeMap::new())
        };
        let dry_run = config.policy.mode() == Mode::DryRun;
        Some(ListCheck::new(pins, learned, dry_run))
    }

    /// After a list was checked: learns its first sightings (`learn_pins`; the pin another
    /// worker learned first wins), records the definitions it showed for later calls, counts
    /// `mcp_guard.tool_drift` per drifted entry, and returns the drift for the list's record
    /// and whether another worker's first sighting won for a tool this list showed as its own
    /// (the list must then be checked again: `curate_held`).
    pub(super) fn finish_list_check(
        &self,
        host: &mut dyn Host,
        check: &ListCheck<'_>,
    ) -> (Vec<DriftEntry>, bool) {
        let server = self.facts.server_id.as_str();
        let new = check.first_sightings();
        let mut lost = false;
        if !new.is_empty() {
            match pins::learn_first(host.shared(), server, &new) {
                Ok(stored) => lost = check.settle_learned(&new, &stored),
                Err(_) => {
                    log::warn!("mcp-guard: could not store the learned tool pins");
                    check.unlearned(&new);
                }
            }
        }
        if !pins::record_defs(host.shared(), server, &check.defs()) {
            log::warn!("mcp-guard: could not store the tools' definitions (tool pins)");
        }
        let drift = check.drift();
        let max_labels = self.config.max_tool_metrics;
        for d in &drift {
            host.count(
                Metric::ToolDrift {
                    tool: &d.tool,
                    max_labels,
                },
                1,
            );
        }
        (drift, lost)
    }
}
