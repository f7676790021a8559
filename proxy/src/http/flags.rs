//! Envoy's response flags (`%RESPONSE_FLAGS%`): what went wrong, or was done on purpose,
//! to a stream. They print in the order they were set, comma-separated (`URX,UF`: the
//! retries ran out, then the last attempt's connection failed), or `-` when none was.

use std::fmt;

/// One flag, by its short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// No healthy upstream.
    UH,
    /// Upstream request timeout.
    UT,
    /// Upstream connection failure.
    UF,
    /// Upstream remote reset.
    UR,
    /// Upstream overflow (circuit breaking).
    UO,
    /// No route found.
    NR,
    /// No cluster found.
    NC,
    /// The request was delayed by fault injection.
    DI,
    /// The request was aborted by fault injection.
    FI,
    /// The retries ran out.
    URX,
    /// Stream idle timeout.
    SI,
    /// Downstream protocol error.
    DPE,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::UH => "UH",
            Flag::UT => "UT",
            Flag::UF => "UF",
            Flag::UR => "UR",
            Flag::UO => "UO",
            Flag::NR => "NR",
            Flag::NC => "NC",
            Flag::DI => "DI",
            Flag::FI => "FI",
            Flag::URX => "URX",
            Flag::SI => "SI",
            Flag::DPE => "DPE",
        }
    }
}

/// The flags of one stream, in the order they were set (each at most once; a stream
/// collects only a few, so they live inline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags {
    set: [Option<Flag>; 4],
}

impl ResponseFlags {
    pub fn one(flag: Flag) -> Self {
        let mut f = ResponseFlags::default();
        f.push(flag);
        f
    }

    /// Sets `flag` (again: no change).
    pub fn push(&mut self, flag: Flag) {
        for slot in &mut self.set {
            match slot {
                Some(f) if *f == flag => return,
                Some(_) => {}
                None => {
                    *slot = Some(flag);
                    return;
                }
            }
        }
    }

    /// Adds `other`'s flags after these.
    pub fn extend(&mut self, other: ResponseFlags) {
        for f in other.set.into_iter().flatten() {
            self.push(f);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set[0].is_none()
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, flag) in self.set.iter().flatten().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(flag.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_in_the_order_set() {
        let mut f = ResponseFlags::default();
        assert_eq!(f.to_string(), "-");
        f.push(Flag::URX);
        f.push(Flag::UF);
        f.push(Flag::URX);
        assert_eq!(f.to_string(), "URX,UF");
        let mut g = ResponseFlags::one(Flag::DI);
        g.extend(ResponseFlags::one(Flag::FI));
        assert_eq!(g.to_string(), "DI,FI");
    }
}
