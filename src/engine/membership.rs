//! Which alarms a service belongs to: the configured `[[alarms]]`
//! patterns compiled once into one trie, and the alarm names their
//! `$word` captures make (README, "Alarms").

use std::sync::Arc;

use crate::pattern::{expand_template, PatternSet};

/// One configured `[[alarms]]` section, after validation.
#[derive(Debug, Clone, Default)]
pub struct AlarmDef {
    /// Name template; `$word` is filled from the first matching include.
    pub name: String,
    /// The `pattern` (if any) followed by `includes`.
    pub includes: Vec<String>,
    /// Patterns that keep a service out.
    pub excludes: Vec<String>,
    /// Names of the `[alerts.<name>]` sections fired by this alarm.
    pub alerts: Vec<String>,
    /// Configured alarm names (templates) this alarm depends on: their
    /// ERROR holds this alarm's alerts.
    pub depends_on: Vec<String>,
}

/// Why the alarms' `depends_on` cannot be used (a config error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DependencyError {
    /// A dependency that names no configured alarm.
    #[error("alarm '{alarm}' depends on '{dependency}', which is not a configured alarm name")]
    UnknownAlarm {
        /// The alarm with the dependency.
        alarm: String,
        /// What it names.
        dependency: String,
    },
    /// Alarms that depend on each other in a circle.
    #[error("alarm dependencies form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Checks `depends_on` of every alarm: each names a configured alarm, and
/// no cycle runs through them.
pub fn check_dependencies(defs: &[AlarmDef]) -> Result<(), DependencyError> {
    let index = |name: &str| defs.iter().position(|d| d.name == name);
    for d in defs {
        for dep in &d.depends_on {
            if index(dep).is_none() {
                return Err(DependencyError::UnknownAlarm {
                    alarm: d.name.clone(),
                    dependency: dep.clone(),
                });
            }
        }
    }
    // Depth-first search with colours: 1 = on the current path, 2 = done.
    fn visit(
        i: usize,
        defs: &[AlarmDef],
        colour: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Result<(), DependencyError> {
        colour[i] = 1;
        path.push(i);
        for dep in &defs[i].depends_on {
            let Some(j) = defs.iter().position(|d| &d.name == dep) else {
                continue;
            };
            if colour[j] == 1 {
                let start = path.iter().position(|p| *p == j).unwrap_or(0);
                let mut names: Vec<String> = path[start..]
                    .iter()
                    .map(|p| defs[*p].name.clone())
                    .collect();
                names.push(defs[j].name.clone());
                return Err(DependencyError::Cycle(names));
            }
            if colour[j] == 0 {
                visit(j, defs, colour, path)?;
            }
        }
        path.pop();
        colour[i] = 2;
        Ok(())
    }
    let mut colour = vec![0u8; defs.len()];
    for i in 0..defs.len() {
        if colour[i] == 0 {
            visit(i, defs, &mut colour, &mut Vec::new())?;
        }
    }
    Ok(())
}

/// Which pattern of which alarm a `PatternSet` id stands for.
#[derive(Debug, Clone, Copy)]
struct PatternRef {
    def: u32,
    exclude: bool,
    /// Position among the alarm's includes: the first match names the alarm.
    order: u32,
}

/// All alarm patterns compiled into one trie, built once at start.
#[derive(Debug, Default)]
pub struct AlarmMatcher {
    defs: Vec<AlarmDef>,
    set: PatternSet,
    refs: Vec<PatternRef>,
}

impl AlarmMatcher {
    /// Compiles the configured alarms.
    pub fn new(defs: Vec<AlarmDef>) -> AlarmMatcher {
        let mut set = PatternSet::default();
        let mut refs = Vec::new();
        for (d, def) in defs.iter().enumerate() {
            for (order, p) in def.includes.iter().enumerate() {
                set.add(p);
                refs.push(PatternRef {
                    def: d as u32,
                    exclude: false,
                    order: order as u32,
                });
            }
            for p in &def.excludes {
                set.add(p);
                refs.push(PatternRef {
                    def: d as u32,
                    exclude: true,
                    order: 0,
                });
            }
        }
        AlarmMatcher { defs, set, refs }
    }

    /// The configured alarms.
    pub fn defs(&self) -> &[AlarmDef] {
        &self.defs
    }

    /// The alarms `service` belongs to, as `(alarm name, def index)`,
    /// sorted by name without duplicates.
    pub fn alarms_for(&self, service: &str) -> Vec<(String, usize)> {
        let mut ids = Vec::new();
        self.set.matches(service.as_bytes(), &mut ids);
        if ids.is_empty() {
            return Vec::new();
        }
        // Per def: the first matching include (by order), unless excluded.
        ids.sort_unstable_by_key(|id| {
            let r = self.refs[*id as usize];
            (r.def, !r.exclude, r.order)
        });
        let mut out: Vec<(String, usize)> = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            let def = self.refs[ids[i] as usize].def;
            let first = ids[i];
            while i < ids.len() && self.refs[ids[i] as usize].def == def {
                i += 1;
            }
            if self.refs[first as usize].exclude {
                continue;
            }
            let d = &self.defs[def as usize];
            let caps = self
                .set
                .pattern(first)
                .captures(service)
                .unwrap_or_default();
            out.push((expand_template(&d.name, &caps), def as usize));
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        if super::is_internal(service) {
            // lovebeat's own services belong to its own alarm only, not to
            // a catch-all `*` of the user's.
            out.retain(|(name, _)| name == super::SELF_ALARM);
        }
        out
    }

    /// The alarms the instance of `def` that `service` belongs to depends
    /// on: its `depends_on` with `$word` filled from the same captures that
    /// named it.
    pub fn dependencies(&self, def: usize, service: &str) -> Vec<Arc<str>> {
        let Some(d) = self.defs.get(def) else {
            return Vec::new();
        };
        if d.depends_on.is_empty() {
            return Vec::new();
        }
        let mut ids = Vec::new();
        self.set.matches(service.as_bytes(), &mut ids);
        let first = ids
            .iter()
            .filter(|id| {
                let r = self.refs[**id as usize];
                r.def as usize == def && !r.exclude
            })
            .min_by_key(|id| self.refs[**id as usize].order);
        let caps = first
            .and_then(|id| self.set.pattern(*id).captures(service))
            .unwrap_or_default();
        d.depends_on
            .iter()
            .map(|t| Arc::from(expand_template(t, &caps)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, includes: &[&str], excludes: &[&str]) -> AlarmDef {
        AlarmDef {
            name: name.into(),
            includes: includes.iter().map(|s| s.to_string()).collect(),
            excludes: excludes.iter().map(|s| s.to_string()).collect(),
            alerts: vec![],
            depends_on: vec![],
        }
    }

    #[test]
    fn membership_with_templates_includes_and_excludes() {
        let m = AlarmMatcher::new(vec![
            def("server-$name", &["application-name.$name.*"], &[]),
            def("all", &["*"], &["*.test"]),
            def("mixed", &["a.*", "b.$x"], &["a.secret"]),
        ]);
        assert_eq!(
            m.alarms_for("application-name.web01.cpu"),
            vec![("all".into(), 1), ("server-web01".into(), 0)]
        );
        assert_eq!(m.alarms_for("x.test"), vec![]);
        assert_eq!(m.alarms_for("a.secret"), vec![("all".into(), 1)]);
        assert_eq!(
            m.alarms_for("b.q"),
            vec![("all".into(), 1), ("mixed".into(), 2)]
        );
    }

    #[test]
    fn first_matching_include_names_the_alarm() {
        let m = AlarmMatcher::new(vec![def("h-$host", &["x.$host.*", "$host.*"], &[])]);
        assert_eq!(m.alarms_for("x.web.cpu"), vec![("h-web".into(), 0)]);
        assert_eq!(m.alarms_for("db.cpu"), vec![("h-db".into(), 0)]);
    }
}
