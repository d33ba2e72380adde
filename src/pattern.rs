//! The 1.x pattern language, compiled once into a trie (README, "Alarms").
//!
//! A pattern matches a whole service name: `*` matches any run of characters
//! (dots and nothing included), `$word` matches one or more characters other
//! than `.` and captures them, every other character matches itself. All
//! configured patterns share one trie, walked once per name by an NFA
//! simulation, so adding alarms costs only the nodes their patterns add and
//! patterns with a common prefix are matched together.
//!
//! Captures (needed only to name a templated alarm) are taken from the one
//! pattern that matched, by a memoised backtracking match that gives the
//! same answer as the regex translation (`.*`, `([^.]+)`, leftmost-first).

use std::cell::RefCell;

/// One element of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(u8),
    Star,
    Var(Box<str>),
}

/// A parsed pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parses a pattern; every string is a valid pattern.
    pub fn parse(src: &str) -> Pattern {
        let b = src.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'*' => tokens.push(Token::Star),
                b'$' => {
                    let end = b[i + 1..]
                        .iter()
                        .position(|c| !c.is_ascii_lowercase())
                        .map_or(b.len(), |p| i + 1 + p);
                    if end > i + 1 {
                        tokens.push(Token::Var(src[i + 1..end].into()));
                        i = end;
                        continue;
                    }
                    tokens.push(Token::Lit(b'$'));
                }
                c => tokens.push(Token::Lit(c)),
            }
            i += 1;
        }
        Pattern { tokens }
    }

    /// The `$word` captures of a match of `name`, in pattern order, or `None`
    /// if it does not match. Same answer as the regex translation, which
    /// reads a name as characters: a capture never splits one (a name
    /// loaded from a database may hold any character, README, "Configuration").
    pub fn captures<'n>(&self, name: &'n str) -> Option<Vec<(&str, &'n str)>> {
        let width = name.len() + 1;
        let mut failed = vec![false; (self.tokens.len() + 1) * width];
        let mut caps = Vec::new();
        if self.walk(0, 0, name, &mut failed, &mut caps) {
            caps.reverse();
            Some(
                caps.into_iter()
                    .map(|(t, s, e)| match &self.tokens[t] {
                        Token::Var(v) => (&**v, &name[s..e]),
                        _ => unreachable!("only Var tokens are recorded as captures"),
                    })
                    .collect(),
            )
        } else {
            None
        }
    }

    /// Backtracking in regex priority order (greedy), with `failed` memoising
    /// the (token, position) pairs known not to lead to a match.
    ///
    /// A wildcard ends only between characters, so every capture is a
    /// whole `&str` (literals are whole characters of the pattern, so they
    /// too start and end between characters of the name).
    fn walk(
        &self,
        t: usize,
        pos: usize,
        name: &str,
        failed: &mut [bool],
        caps: &mut Vec<(usize, usize, usize)>,
    ) -> bool {
        let b = name.as_bytes();
        let width = b.len() + 1;
        if failed[t * width + pos] {
            return false;
        }
        let ok = match self.tokens.get(t) {
            None => pos == b.len(),
            Some(Token::Lit(c)) => {
                b.get(pos) == Some(c) && self.walk(t + 1, pos + 1, name, failed, caps)
            }
            Some(Token::Star) => (pos..=b.len())
                .rev()
                .filter(|end| name.is_char_boundary(*end))
                .any(|end| self.walk(t + 1, end, name, failed, caps)),
            Some(Token::Var(_)) => {
                let run = b[pos..].iter().take_while(|c| **c != b'.').count();
                (pos + 1..=pos + run)
                    .rev()
                    .filter(|end| name.is_char_boundary(*end))
                    .any(|end| {
                        if self.walk(t + 1, end, name, failed, caps) {
                            caps.push((t, pos, end));
                            true
                        } else {
                            false
                        }
                    })
            }
        };
        if !ok {
            failed[t * width + pos] = true;
        }
        ok
    }
}

/// How a trie node was entered, which decides what it loops on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// After `*`: loops on every character.
    Star,
    /// After `$word`: loops on every character but `.`.
    Var,
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    /// Literal edges, sorted by byte.
    lits: Vec<(u8, u32)>,
    /// The `*` child, or 0.
    star: u32,
    /// The `$word` child, or 0 (every `$word` matches the same language).
    var: u32,
    /// Ids of the patterns that end here.
    accept: Vec<u32>,
}

impl Node {
    fn new(kind: Kind) -> Node {
        Node {
            kind,
            lits: Vec::new(),
            star: 0,
            var: 0,
            accept: Vec::new(),
        }
    }
}

/// Many patterns compiled into one trie; ids are insertion order.
#[derive(Debug)]
pub struct PatternSet {
    nodes: Vec<Node>,
    patterns: Vec<Pattern>,
}

impl Default for PatternSet {
    fn default() -> Self {
        PatternSet {
            nodes: vec![Node::new(Kind::Plain)],
            patterns: Vec::new(),
        }
    }
}

/// Per-thread scratch for `matches`: the current and next state lists, and
/// a mark per node stamped with a generation, so matching allocates nothing
/// once warm.
type Scratch = (Vec<u32>, Vec<u32>, Vec<u32>, u32);

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new(), 0)) };
}

impl PatternSet {
    /// Adds a pattern and returns its id.
    pub fn add(&mut self, src: &str) -> u32 {
        let pattern = Pattern::parse(src);
        let mut node = 0usize;
        for tok in &pattern.tokens {
            let next = match tok {
                Token::Lit(c) => self.nodes[node]
                    .lits
                    .binary_search_by_key(c, |(b, _)| *b)
                    .ok()
                    .map(|i| self.nodes[node].lits[i].1),
                Token::Star => Some(self.nodes[node].star).filter(|n| *n != 0),
                Token::Var(_) => Some(self.nodes[node].var).filter(|n| *n != 0),
            };
            node = match next {
                Some(n) => n as usize,
                None => {
                    let id = self.nodes.len() as u32;
                    let kind = match tok {
                        Token::Lit(_) => Kind::Plain,
                        Token::Star => Kind::Star,
                        Token::Var(_) => Kind::Var,
                    };
                    self.nodes.push(Node::new(kind));
                    let parent = &mut self.nodes[node];
                    match tok {
                        Token::Lit(c) => {
                            let at = parent.lits.partition_point(|(b, _)| b < c);
                            parent.lits.insert(at, (*c, id));
                        }
                        Token::Star => parent.star = id,
                        Token::Var(_) => parent.var = id,
                    }
                    id as usize
                }
            };
        }
        let id = self.patterns.len() as u32;
        self.nodes[node].accept.push(id);
        self.patterns.push(pattern);
        id
    }

    /// The pattern with this id.
    pub fn pattern(&self, id: u32) -> &Pattern {
        &self.patterns[id as usize]
    }

    /// Number of patterns added.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// True when no pattern was added.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Appends the ids of every pattern matching `name` to `out` (unsorted).
    pub fn matches(&self, name: &[u8], out: &mut Vec<u32>) {
        if self.patterns.is_empty() {
            return;
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (cur, next, marks, gen) = &mut *s;
            if marks.len() < self.nodes.len() {
                marks.resize(self.nodes.len(), 0);
            }
            cur.clear();
            *gen = gen.wrapping_add(1);
            if *gen == 0 {
                marks.iter_mut().for_each(|m| *m = 0);
                *gen = 1;
            }
            self.enter(0, cur, marks, *gen);
            for &c in name {
                if cur.is_empty() {
                    return;
                }
                next.clear();
                *gen = gen.wrapping_add(1);
                if *gen == 0 {
                    marks.iter_mut().for_each(|m| *m = 0);
                    *gen = 1;
                }
                for &n in cur.iter() {
                    let node = &self.nodes[n as usize];
                    let loops = match node.kind {
                        Kind::Plain => false,
                        Kind::Star => true,
                        Kind::Var => c != b'.',
                    };
                    if loops {
                        self.enter(n, next, marks, *gen);
                    }
                    if let Ok(i) = node.lits.binary_search_by_key(&c, |(b, _)| *b) {
                        self.enter(node.lits[i].1, next, marks, *gen);
                    }
                    if node.var != 0 && c != b'.' {
                        self.enter(node.var, next, marks, *gen);
                    }
                }
                std::mem::swap(cur, next);
            }
            for &n in cur.iter() {
                out.extend_from_slice(&self.nodes[n as usize].accept);
            }
        });
    }

    /// Adds `n` and everything reachable from it by `*` matching nothing.
    fn enter(&self, mut n: u32, list: &mut Vec<u32>, marks: &mut [u32], gen: u32) {
        loop {
            if marks[n as usize] == gen {
                return;
            }
            marks[n as usize] = gen;
            list.push(n);
            let star = self.nodes[n as usize].star;
            if star == 0 {
                return;
            }
            n = star;
        }
    }
}

/// Replaces each `$word` (longest run of lower-case letters) in `template`
/// by its capture, or by `word` when there is none (1.x).
pub fn expand_template(template: &str, captures: &[(&str, &str)]) -> String {
    let b = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let end = b[i + 1..]
                .iter()
                .position(|c| !c.is_ascii_lowercase())
                .map_or(b.len(), |p| i + 1 + p);
            if end > i + 1 {
                let var = &template[i + 1..end];
                // With a repeated name the last capture wins, as in 1.x.
                let value = captures
                    .iter()
                    .rev()
                    .find(|(n, _)| *n == var)
                    .map(|(_, v)| *v);
                out.push_str(value.unwrap_or(var));
                i = end;
                continue;
            }
        }
        let ch_len = template[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&template[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::AlarmMatcher;
    use proptest::prelude::*;

    /// The plain regex translation 1.x used, the reference for the trie:
    /// over characters (a capture is a string), or over bytes (`bytes`,
    /// what membership is decided on, for names that are not UTF-8).
    fn translate(p: &str, bytes: bool) -> String {
        let mut re = String::from(if bytes { "(?s-u)^" } else { "(?s)^" });
        let mut lit = Vec::new();
        let flush = |lit: &mut Vec<u8>, re: &mut String| {
            if bytes {
                for b in lit.iter() {
                    re.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                re.push_str(&regex::escape(&String::from_utf8_lossy(lit)));
            }
            lit.clear();
        };
        for tok in Pattern::parse(p).tokens {
            match tok {
                Token::Lit(c) => lit.push(c),
                Token::Star => {
                    flush(&mut lit, &mut re);
                    re.push_str(".*");
                }
                Token::Var(_) => {
                    flush(&mut lit, &mut re);
                    re.push_str("([^.]+)");
                }
            }
        }
        flush(&mut lit, &mut re);
        re.push('$');
        re
    }

    fn to_regex(p: &str) -> regex::Regex {
        regex::Regex::new(&translate(p, false)).expect("translation is a valid regex")
    }

    fn to_bytes_regex(p: &str) -> regex::bytes::Regex {
        regex::bytes::Regex::new(&translate(p, true)).expect("translation is a valid regex")
    }

    fn set_of(patterns: &[&str]) -> PatternSet {
        let mut s = PatternSet::default();
        for p in patterns {
            s.add(p);
        }
        s
    }

    fn matching(set: &PatternSet, name: &str) -> Vec<u32> {
        let mut out = Vec::new();
        set.matches(name.as_bytes(), &mut out);
        out.sort();
        out
    }

    #[test]
    fn literal_star_and_var() {
        let s = set_of(&["a.b", "a.*", "*", "a.$x", "$x.$y", "a.$x.c"]);
        assert_eq!(matching(&s, "a.b"), vec![0, 1, 2, 3, 4]);
        assert_eq!(matching(&s, "a."), vec![1, 2]);
        assert_eq!(matching(&s, "a.bb.c"), vec![1, 2, 5]);
        assert_eq!(matching(&s, "xyz"), vec![2]);
    }

    #[test]
    fn captures_follow_the_regex() {
        let p = Pattern::parse("application-name.$name.*");
        assert_eq!(
            p.captures("application-name.web01.cpu.load"),
            Some(vec![("name", "web01")])
        );
        assert_eq!(
            Pattern::parse("$a*").captures("foo.bar"),
            Some(vec![("a", "foo")])
        );
        assert_eq!(Pattern::parse("$a.b").captures("foo.c"), None);
    }

    #[test]
    fn template_longest_name_wins() {
        let caps = [("name", "web01")];
        assert_eq!(expand_template("server-$name", &caps), "server-web01");
        assert_eq!(expand_template("x-$namefoo", &caps), "x-namefoo");
        assert_eq!(expand_template("$other-$name.", &caps), "other-web01.");
        assert_eq!(expand_template("cost$", &caps), "cost$");
    }

    fn pattern_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("."),
                Just("*"),
                Just("$x"),
                Just("$y"),
                Just("-"),
                Just("é"),
                Just("€"),
            ],
            0..7,
        )
        .prop_map(|parts| parts.concat())
    }

    /// Any characters, biased towards the ones patterns talk about.
    fn unicode_name_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just('.'),
                Just('é'),
                Just('€'),
                Just('\u{10348}'),
                any::<char>(),
            ],
            0..10,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    #[test]
    fn a_capture_never_splits_a_character() {
        // Found by hand: `*` would end inside 'é' and the capture would
        // start in the middle of it (1.x databases hold such names).
        let p = Pattern::parse("*$a.x");
        assert_eq!(p.captures("bé.x"), Some(vec![("a", "é")]));
        assert_eq!(p.captures("é.x"), Some(vec![("a", "é")]));
        assert_eq!(p.captures("b€.x"), Some(vec![("a", "€")]));
        let m = AlarmMatcher::new(vec![crate::engine::AlarmDef {
            name: "a-$a".into(),
            includes: vec!["*$a.x".into()],
            ..Default::default()
        }]);
        assert_eq!(m.alarms_for("hé.x"), vec![("a-é".to_string(), 0)]);
        // Two captures in one two-byte character: a byte split would be
        // the only match; a character split has none, and the alarm is
        // named from the template's words instead of panicking.
        let m = AlarmMatcher::new(vec![crate::engine::AlarmDef {
            name: "a-$a-$b".into(),
            includes: vec!["$a$b".into()],
            ..Default::default()
        }]);
        assert_eq!(m.alarms_for("é"), vec![("a-a-b".to_string(), 0)]);
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('b'), Just('.'), Just('-')],
            0..10,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        /// Membership is decided on bytes, whatever they are: the trie
        /// agrees with the byte regex on any byte string, and capturing
        /// on any string agrees with the character regex, never panicking.
        #[test]
        fn any_bytes_match_as_the_regex_says_and_never_panic(
            patterns in proptest::collection::vec(pattern_strategy(), 1..8),
            names in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..20),
            texts in proptest::collection::vec(unicode_name_strategy(), 1..20),
        ) {
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let set = set_of(&refs);
            let bytes: Vec<_> = patterns.iter().map(|p| to_bytes_regex(p)).collect();
            for name in &names {
                let expected: Vec<u32> = bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_match(name))
                    .map(|(i, _)| i as u32)
                    .collect();
                let mut got = Vec::new();
                set.matches(name, &mut got);
                got.sort();
                prop_assert_eq!(got, expected);
            }
            let chars: Vec<_> = patterns.iter().map(|p| to_regex(p)).collect();
            for text in &texts {
                for (i, r) in chars.iter().enumerate() {
                    let ours = set
                        .pattern(i as u32)
                        .captures(text)
                        .map(|c| c.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
                    let theirs = r.captures(text).map(|c| {
                        c.iter().skip(1).map(|m| m.map_or("", |m| m.as_str())).collect::<Vec<_>>()
                    });
                    prop_assert_eq!(ours, theirs, "pattern {} name {:?}", &patterns[i], text);
                }
                let mut ids = Vec::new();
                set.matches(text.as_bytes(), &mut ids);
            }
        }

        #[test]
        fn trie_agrees_with_regex_translation(
            patterns in proptest::collection::vec(pattern_strategy(), 1..12),
            names in proptest::collection::vec(name_strategy(), 1..30),
        ) {
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let set = set_of(&refs);
            let regexes: Vec<_> = patterns.iter().map(|p| to_regex(p)).collect();
            for name in &names {
                let expected: Vec<u32> = regexes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_match(name))
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(matching(&set, name), expected.clone());
                for (i, r) in regexes.iter().enumerate() {
                    let ours = set.pattern(i as u32).captures(name);
                    let theirs = r.captures(name).map(|c| {
                        c.iter().skip(1).map(|m| m.map_or("", |m| m.as_str())).collect::<Vec<_>>()
                    });
                    let ours = ours.map(|c| c.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
                    prop_assert_eq!(ours, theirs, "pattern {} name {}", patterns[i], name);
                }
            }
        }
    }
}
