//! The `q` search language, as a pure parser and two translators.
//!
//! A query is terms separated by spaces, all of which must match: a word
//! (`orders`), a prefix (`ord*`, at least two characters before the `*`) or a
//! quoted phrase (`"payment declined"`, also with a trailing `*` on its last
//! word). Words are cut at every character that is not a letter or a digit and
//! lowercased, as the index does with the event text, so `/api/orders` is the
//! phrase `api orders`.
//!
//! The user's text never reaches the database as syntax: [`SearchQuery::fts5`]
//! and [`SearchQuery::tsquery`] rebuild an expression from the parsed tokens,
//! which hold only letters and digits, so no operator, quote or column filter
//! can be smuggled in.

/// Longest `q` accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most terms (words or phrases) in one query.
pub const MAX_TERMS: usize = 8;
/// Most tokens in one phrase.
pub const MAX_PHRASE_TOKENS: usize = 16;
/// Shortest prefix: one letter would match most of the index.
pub const MIN_PREFIX_CHARS: usize = 2;

/// Why a `q` was refused (answered as `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("the search is longer than {MAX_QUERY_CHARS} characters")]
    TooLong,
    #[error("a quoted phrase is not closed")]
    UnclosedQuote,
    #[error("'*' may only end a word or a phrase")]
    MisplacedStar,
    #[error("a closing quote must be followed by a space, '*' or the end")]
    GluedPhrase,
    #[error("a prefix needs at least {MIN_PREFIX_CHARS} letters or digits before '*'")]
    ShortPrefix,
    #[error("the search has more than {MAX_TERMS} terms")]
    TooManyTerms,
    #[error("a phrase has more than {MAX_PHRASE_TOKENS} words")]
    LongPhrase,
    #[error("the search holds no letters or digits")]
    Empty,
}

/// One term: a phrase of one or more tokens, the last one a prefix when `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub tokens: Vec<String>,
    pub prefix: bool,
}

/// A parsed search: every term must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub terms: Vec<Term>,
}

/// Splits text into lowercase runs of letters and digits (the index's tokens).
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Parses the user's `q`.
pub fn parse(input: &str) -> Result<SearchQuery, SearchError> {
    if input.chars().count() > MAX_QUERY_CHARS {
        return Err(SearchError::TooLong);
    }
    let mut terms = Vec::new();
    let mut rest = input.trim_start();
    while !rest.is_empty() {
        let (raw, after, quoted) = if let Some(body) = rest.strip_prefix('"') {
            let end = body.find('"').ok_or(SearchError::UnclosedQuote)?;
            (&body[..end], &body[end + 1..], true)
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..], false)
        };
        let (raw, after, prefix) = if quoted {
            match after.strip_prefix('*') {
                Some(a) => (raw, a, true),
                None => (raw, after, false),
            }
        } else {
            match raw.strip_suffix('*') {
                Some(r) => (r, after, true),
                None => (raw, after, false),
            }
        };
        if !quoted && raw.contains('*') {
            return Err(SearchError::MisplacedStar);
        }
        if quoted && after.starts_with(|c: char| !c.is_whitespace() && c != '"') {
            return Err(SearchError::GluedPhrase);
        }
        let toks = tokens(raw);
        if prefix
            && toks
                .last()
                .is_none_or(|t| t.chars().count() < MIN_PREFIX_CHARS)
        {
            return Err(SearchError::ShortPrefix);
        }
        if toks.len() > MAX_PHRASE_TOKENS {
            return Err(SearchError::LongPhrase);
        }
        if !toks.is_empty() {
            terms.push(Term {
                tokens: toks,
                prefix,
            });
        }
        if terms.len() > MAX_TERMS {
            return Err(SearchError::TooManyTerms);
        }
        rest = after.trim_start();
    }
    if terms.is_empty() {
        return Err(SearchError::Empty);
    }
    Ok(SearchQuery { terms })
}

impl SearchQuery {
    /// An SQLite FTS5 MATCH expression: each term a quoted phrase (implicit AND),
    /// `*` after the phrase for a prefix.
    pub fn fts5(&self) -> String {
        self.terms
            .iter()
            .map(|t| {
                let star = if t.prefix { "*" } else { "" };
                format!("\"{}\"{star}", t.tokens.join(" "))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A PostgreSQL `to_tsquery('simple', …)` text: `&` between terms, `<->`
    /// inside a phrase, `:*` on a prefix.
    pub fn tsquery(&self) -> String {
        self.terms
            .iter()
            .map(|t| {
                let last = t.tokens.len() - 1;
                let words = t
                    .tokens
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let star = if t.prefix && i == last { ":*" } else { "" };
                        format!("'{w}'{star}")
                    })
                    .collect::<Vec<_>>()
                    .join(" <-> ");
                format!("({words})")
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(tokens: &[&str], prefix: bool) -> Term {
        Term {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            prefix,
        }
    }

    #[test]
    fn words_prefixes_and_phrases() {
        let q = parse(r#"  Orders ord* "payment  Declined" "api ve"* /api/v1 "#).unwrap();
        assert_eq!(
            q.terms,
            vec![
                term(&["orders"], false),
                term(&["ord"], true),
                term(&["payment", "declined"], false),
                term(&["api", "ve"], true),
                term(&["api", "v1"], false),
            ]
        );
        assert_eq!(
            q.fts5(),
            r#""orders" "ord"* "payment declined" "api ve"* "api v1""#
        );
        assert_eq!(
            q.tsquery(),
            "('orders') & ('ord':*) & ('payment' <-> 'declined') & ('api' <-> 've':*) & ('api' <-> 'v1')"
        );
    }

    #[test]
    fn syntax_never_passes_through() {
        let q = parse(r#"a' OR 1=1 -- NEAR(x) col:val ^x)"#).unwrap();
        for t in &q.terms {
            for w in &t.tokens {
                assert!(w.chars().all(char::is_alphanumeric), "{w}");
            }
        }
        assert_eq!(q.fts5(), r#""a" "or" "1 1" "near x" "col val" "x""#);
        // Unicode letters are kept and lowercased.
        assert_eq!(
            parse("Ünïcode").unwrap().terms,
            vec![term(&["ünïcode"], false)]
        );
    }

    #[test]
    fn bad_queries_say_why() {
        assert_eq!(parse(r#""open"#), Err(SearchError::UnclosedQuote));
        assert_eq!(parse("a*b"), Err(SearchError::MisplacedStar));
        assert_eq!(parse(r#""ab"*x"#), Err(SearchError::GluedPhrase));
        assert_eq!(parse("a*"), Err(SearchError::ShortPrefix));
        assert_eq!(parse("*"), Err(SearchError::ShortPrefix));
        assert_eq!(parse(""), Err(SearchError::Empty));
        assert_eq!(parse(" -- // "), Err(SearchError::Empty));
        assert_eq!(parse(&"x".repeat(257)), Err(SearchError::TooLong));
        assert_eq!(parse("a b c d e f g h i"), Err(SearchError::TooManyTerms));
        assert_eq!(
            parse(&format!("\"{}\"", "w ".repeat(17))),
            Err(SearchError::LongPhrase)
        );
    }
}
