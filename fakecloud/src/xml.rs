//! A tiny XML writer for the EC2 and awsQuery response bodies.
//!
//! Every text node and attribute goes through [`escape`]: offering descriptions, tag values and
//! error messages are caller-controlled, and an unescaped `<` would make the SDK's parser fail
//! with a confusing "unhandled" error instead of the real one.

use std::borrow::Cow;
use std::fmt::Display;

/// Escapes the five XML special characters.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Builds an XML document element by element.
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    /// Starts a document with the XML declaration.
    pub fn new() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
        }
    }

    /// Writes `<name xmlns="ns">`, the children written by `body`, and `</name>`.
    pub fn root(&mut self, name: &str, namespace: &str, body: impl FnOnce(&mut Self)) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(" xmlns=\"");
        self.out.push_str(&escape(namespace));
        self.out.push_str("\">");
        body(self);
        self.close(name);
    }

    /// Writes `<name>`, the children written by `body`, and `</name>`.
    pub fn elem(&mut self, name: &str, body: impl FnOnce(&mut Self)) {
        self.open(name);
        body(self);
        self.close(name);
    }

    /// Writes `<name>value</name>` with the value escaped.
    pub fn leaf(&mut self, name: &str, value: impl Display) {
        self.open(name);
        self.out.push_str(&escape(&value.to_string()));
        self.close(name);
    }

    /// Writes the leaf only when there is a value.
    pub fn opt_leaf<T: Display>(&mut self, name: &str, value: Option<T>) {
        if let Some(value) = value {
            self.leaf(name, value);
        }
    }

    /// Returns the document.
    pub fn finish(self) -> String {
        self.out
    }

    fn open(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_text() {
        let mut w = XmlWriter::new();
        w.root("R", "urn:x", |w| w.leaf("Message", "a < b & \"c\""));
        let doc = w.finish();
        assert!(
            doc.ends_with("<R xmlns=\"urn:x\"><Message>a &lt; b &amp; &quot;c&quot;</Message></R>")
        );
    }
}
