//! Stop sequences over streamed text: emits text as soon as it cannot be the start of a stop
//! string, and cuts the output where one appears.

#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What pushing a piece produced.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text that is safe to send now (may be empty).
    Text(String),
    /// A stop string was found: send this text, then finish.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, piece: &str) -> StopOutcome {
        self.held.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopOutcome::Stopped(out);
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .rev()
                    .filter(|&k| s.is_char_boundary(k) && self.held.ends_with(&s[..k]))
                    .take(1)
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopOutcome::Text(out)
    }

    /// Text still held back when generation ends without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_text_through_without_stops() {
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("abc"), StopOutcome::Text("abc".into()));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn finds_a_stop_split_across_pieces() {
        let mut m = StopMatcher::new(vec!["\nUser:".into()]);
        assert_eq!(m.push("hello\nUs"), StopOutcome::Text("hello".into()));
        assert_eq!(m.push("er: more"), StopOutcome::Stopped("".into()));
    }

    #[test]
    fn releases_held_text_that_was_not_a_stop() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("aST"), StopOutcome::Text("a".into()));
        assert_eq!(m.push("x"), StopOutcome::Text("STx".into()));
        assert_eq!(m.push("ST"), StopOutcome::Text("".into()));
        assert_eq!(m.finish(), "ST");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["c".into(), "b".into()]);
        assert_eq!(m.push("abcd"), StopOutcome::Stopped("a".into()));
    }
}
