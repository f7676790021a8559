//! `envoy.type.matcher.v3` string and regex matchers, compiled once.

use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use regex::Regex;

use super::error::{ConfigError, Result};

/// Compiles an RE2-syntax regex. The whole value must match (Envoy's `safe_regex`
/// semantics), so the pattern is anchored.
pub fn regex(m: &matcher::RegexMatcher, field: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{})$", m.regex))
        .map_err(|e| ConfigError::new(field, format!("invalid regex '{}': {e}", m.regex)))
}

/// An unanchored regex, for rewrites that substitute every match.
pub fn regex_unanchored(m: &matcher::RegexMatcher, field: &str) -> Result<Regex> {
    Regex::new(&m.regex)
        .map_err(|e| ConfigError::new(field, format!("invalid regex '{}': {e}", m.regex)))
}

/// `envoy.type.matcher.v3.StringMatcher`, compiled.
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct StringMatcher {
    pub pattern: StringMatch,
    pub ignore_case: bool,
}

impl StringMatcher {
    pub fn matches(&self, value: &str) -> bool {
        if self.ignore_case {
            let v = value.to_ascii_lowercase();
            match &self.pattern {
                StringMatch::Exact(s) => v == *s,
                StringMatch::Prefix(s) => v.starts_with(s.as_str()),
                StringMatch::Suffix(s) => v.ends_with(s.as_str()),
                StringMatch::Contains(s) => v.contains(s.as_str()),
                StringMatch::Regex(r) => r.is_match(value),
            }
        } else {
            match &self.pattern {
                StringMatch::Exact(s) => value == s,
                StringMatch::Prefix(s) => value.starts_with(s.as_str()),
                StringMatch::Suffix(s) => value.ends_with(s.as_str()),
                StringMatch::Contains(s) => value.contains(s.as_str()),
                StringMatch::Regex(r) => r.is_match(value),
            }
        }
    }
}

impl TryFrom<&matcher::StringMatcher> for StringMatcher {
    type Error = ConfigError;
    fn try_from(m: &matcher::StringMatcher) -> Result<Self> {
        use matcher::string_matcher::MatchPattern as P;
        let fold = |s: &str| {
            if m.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let pattern = match &m.match_pattern {
            Some(P::Exact(s)) => StringMatch::Exact(fold(s)),
            Some(P::Prefix(s)) => StringMatch::Prefix(fold(s)),
            Some(P::Suffix(s)) => StringMatch::Suffix(fold(s)),
            Some(P::Contains(s)) => StringMatch::Contains(fold(s)),
            Some(P::SafeRegex(r)) => {
                if m.ignore_case {
                    return Err(ConfigError::new(
                        "ignore_case",
                        "cannot be used with safe_regex",
                    ));
                }
                StringMatch::Regex(regex(r, "safe_regex")?)
            }
            Some(P::Custom(_)) => {
                return Err(ConfigError::new(
                    "custom",
                    "custom string matchers are not supported",
                ))
            }
            None => return Err(ConfigError::new("", "a match pattern is required")),
        };
        Ok(StringMatcher {
            pattern,
            ignore_case: m.ignore_case,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(pattern: matcher::string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
        StringMatcher::try_from(&matcher::StringMatcher {
            ignore_case,
            match_pattern: Some(pattern),
        })
        .unwrap()
    }

    #[test]
    fn string_matchers() {
        use matcher::string_matcher::MatchPattern as P;
        assert!(sm(P::Exact("Ab".into()), true).matches("aB"));
        assert!(!sm(P::Exact("Ab".into()), false).matches("aB"));
        assert!(sm(P::Prefix("/a".into()), false).matches("/abc"));
        assert!(sm(P::Suffix(".js".into()), false).matches("x.js"));
        assert!(sm(P::Contains("mid".into()), false).matches("amidst"));
        let re = P::SafeRegex(matcher::RegexMatcher {
            regex: "v[0-9]+".into(),
            ..Default::default()
        });
        assert!(sm(re.clone(), false).matches("v12"));
        assert!(
            !sm(re, false).matches("xv12"),
            "safe_regex matches the whole value"
        );
    }

    #[test]
    fn bad_regex_names_field() {
        let m = matcher::StringMatcher {
            ignore_case: false,
            match_pattern: Some(matcher::string_matcher::MatchPattern::SafeRegex(
                matcher::RegexMatcher {
                    regex: "(".into(),
                    ..Default::default()
                },
            )),
        };
        let e = StringMatcher::try_from(&m).unwrap_err();
        assert_eq!(e.path, "safe_regex");
    }
}
