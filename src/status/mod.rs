//! Public status pages (README, "Status pages"): what an operator links
//! from their product. A page shows only what `[[status_pages]]` names,
//! under the display names it gives: the current state of each entry, a
//! bar of its daily uptime from the history store, its 30, 90 and 365-day
//! uptime, and the page's own incidents (`history/pages.rs`). The model
//! ([`model::PageModel`]) is built once and rendered as HTML, JSON and RSS
//! (`render.rs`); the HTTP side (`http/status.rs`) caches it briefly so a
//! flood of visitors costs one build.

pub mod config;
pub mod model;
pub mod render;

use std::collections::HashMap;

use crate::history::pages::AutoPages;
pub use config::{StatusPageConfig, Target};

/// One entry of a page, checked.
#[derive(Debug, Clone)]
pub struct EntryDef {
    /// What it watches (never shown).
    pub target: Target,
    /// What the page calls it.
    pub display_name: String,
    /// Its badge's URL segment (`config::segment`).
    pub segment: String,
}

/// One group of a page.
#[derive(Debug, Clone)]
pub struct GroupDef {
    /// Its heading.
    pub title: String,
    /// Its entries, in order.
    pub entries: Vec<EntryDef>,
}

/// One page, checked.
#[derive(Debug, Clone)]
pub struct PageDef {
    /// Its address, `/status/<slug>`.
    pub slug: String,
    /// Its heading.
    pub title: String,
    /// The line under it.
    pub description: String,
    /// Days its bars cover.
    pub days: u16,
    /// The zone its days are cut in.
    pub tz: chrono_tz::Tz,
    /// Its groups.
    pub groups: Vec<GroupDef>,
    /// True when visitors may subscribe by mail (`mail` is set).
    pub subscriptions: bool,
    /// Where each update of its incidents is posted.
    pub webhooks: Vec<reqwest::Url>,
}

impl PageDef {
    /// True when its incidents' updates go out (by mail or webhook).
    pub fn notifies(&self) -> bool {
        self.subscriptions || !self.webhooks.is_empty()
    }
}

impl PageDef {
    /// Its entries, over all groups, in order.
    pub fn entries(&self) -> impl Iterator<Item = &EntryDef> {
        self.groups.iter().flat_map(|g| g.entries.iter())
    }
}

/// Every configured page, by slug.
#[derive(Debug, Default)]
pub struct Pages {
    pages: HashMap<String, std::sync::Arc<PageDef>>,
}

impl Pages {
    /// The pages of a configuration already checked (`config::validate`).
    pub fn new(configs: &[StatusPageConfig]) -> Pages {
        let mut pages = HashMap::new();
        for c in configs {
            let mut place = 0;
            let groups = c
                .groups
                .iter()
                .map(|g| GroupDef {
                    title: g.title.clone(),
                    entries: g
                        .entries
                        .iter()
                        .filter_map(|e| {
                            place += 1;
                            Some(EntryDef {
                                target: e.target()?,
                                display_name: e.display_name.clone(),
                                segment: config::segment(&e.display_name, place),
                            })
                        })
                        .collect(),
                })
                .collect();
            let tz =
                c.tz.as_deref()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(chrono_tz::UTC);
            pages.insert(
                c.slug.clone(),
                std::sync::Arc::new(PageDef {
                    slug: c.slug.clone(),
                    title: c.title.clone(),
                    description: c.description.clone(),
                    days: c.days,
                    tz,
                    groups,
                    subscriptions: c.mail.is_some(),
                    webhooks: c.webhooks.0.iter().map(|u| u.0.clone()).collect(),
                }),
            );
        }
        Pages { pages }
    }

    /// The page of `slug`.
    pub fn get(&self, slug: &str) -> Option<&std::sync::Arc<PageDef>> {
        self.pages.get(slug)
    }

    /// Every page.
    pub fn all(&self) -> impl Iterator<Item = &std::sync::Arc<PageDef>> {
        self.pages.values()
    }

    /// The slugs.
    pub fn slugs(&self) -> impl Iterator<Item = &str> {
        self.pages.keys().map(String::as_str)
    }

    /// The slugs of the pages whose updates go out, for the history to
    /// start their cursors before anything is written.
    pub fn notifying(&self) -> Vec<String> {
        self.pages
            .values()
            .filter(|p| p.notifies())
            .map(|p| p.slug.clone())
            .collect()
    }

    /// Which pages show each alarm, for the history writer's automatic
    /// incidents (the first display name of an alarm on a page titles
    /// them).
    pub fn auto(&self) -> AutoPages {
        let mut auto: AutoPages = HashMap::new();
        for p in self.pages.values() {
            for e in p.entries() {
                if let Target::Alarm(a) = &e.target {
                    let list = auto.entry(a.clone()).or_default();
                    if !list.iter().any(|(s, _)| *s == p.slug) {
                        list.push((p.slug.clone(), e.display_name.clone()));
                    }
                }
            }
        }
        auto
    }
}
