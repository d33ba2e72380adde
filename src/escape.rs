//! Text made safe for the formats lovebeat writes, in one place: HTML and
//! XML (badges, Telegram and Matrix messages) and errors told on one line
//! (the client's messages, alert failures).

/// `text` as HTML or XML text: `&`, `<` and `>` escaped, so nothing in it
/// opens a tag.
pub fn html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` as an HTML or XML attribute value in double quotes:
/// [`html_text`] with `"` escaped too.
pub fn html_attr(text: &str) -> String {
    html_text(text).replace('"', "&quot;")
}

/// `text` on one line: trimmed, and each control character (a line
/// break, a terminal escape), Unicode line or paragraph separator and
/// bidirectional override a space, so what a receiver or a job wrote
/// cannot forge log lines, break a header, drive a terminal or reorder
/// what a reader sees.
pub fn one_line(text: &str) -> String {
    let breaks = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let line: String = text
        .chars()
        .map(|c| if breaks(c) { ' ' } else { c })
        .collect();
    line.trim().to_string()
}

/// An error and its causes on one line (`error sending request: tcp
/// connect error: Connection refused`): the top one alone rarely says
/// what to fix. A cause whose text the line already holds is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_opens_no_tag_and_an_attribute_no_quote() {
        assert_eq!(html_text(r#"<a href="x">&"#), r#"&lt;a href="x"&gt;&amp;"#);
        assert_eq!(html_attr(r#"x" onclick="y"#), "x&quot; onclick=&quot;y");
    }

    #[test]
    fn one_line_has_no_control_character() {
        assert_eq!(one_line("a\u{2028}b\u{202e}c\u{2069}"), "a b c");
        assert_eq!(
            one_line(" 550 no\r\nX-Forged: 1\x1b[2J\0 "),
            "550 no  X-Forged: 1 [2J"
        );
    }

    /// An error with a message and, optionally, a cause.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let refused = Layer("Connection refused", None);
        // A cause that repeats what the line holds is left out.
        let connect = Layer(
            "tcp connect error: Connection refused",
            Some(Box::new(refused)),
        );
        let top = Layer("error sending request", Some(Box::new(connect)));
        assert_eq!(
            error_chain(&top),
            "error sending request: tcp connect error: Connection refused"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
