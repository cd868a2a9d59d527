//! Recent samples of one figure (a node's CPU busy %, a process's CPU %),
//! capped to the last [`SAMPLES`], for sparklines.

use std::collections::VecDeque;

/// Samples kept per figure: a minute at the default interval.
pub const SAMPLES: usize = 60;

/// Bars of a text sparkline, lowest to highest.
const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last samples of a figure, oldest first, at most `cap` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    samples: VecDeque<f64>,
    cap: usize,
}

impl Default for History {
    fn default() -> Self {
        History::with_capacity(SAMPLES)
    }
}

impl History {
    pub fn with_capacity(cap: usize) -> History {
        History {
            samples: VecDeque::with_capacity(cap),
            cap: cap.max(1),
        }
    }

    /// Adds a sample, dropping the oldest when full. Non-finite or negative
    /// samples count as zero.
    pub fn push(&mut self, value: f64) {
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.samples.push_back(if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        });
    }

    pub fn latest(&self) -> Option<f64> {
        self.samples.back().copied()
    }

    /// Highest sample kept (0 when empty).
    pub fn max(&self) -> f64 {
        self.samples.iter().copied().fold(0.0, f64::max)
    }

    /// Samples, oldest first.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.samples.iter().copied()
    }

    /// The last `width` samples, oldest first, rounded for a sparkline widget.
    pub fn tail_u64(&self, width: usize) -> Vec<u64> {
        let skip = self.samples.len().saturating_sub(width);
        self.samples
            .iter()
            .skip(skip)
            .map(|v| v.round() as u64)
            .collect()
    }

    /// The last `width` samples as a line of block characters, scaled to
    /// `ceiling` (or the highest sample, if higher); right-aligned so the
    /// newest sample is always in the last column.
    pub fn bars(&self, width: usize, ceiling: f64) -> String {
        let skip = self.samples.len().saturating_sub(width);
        let top = self.max().max(ceiling);
        let mut out: String = " ".repeat(width.saturating_sub(self.samples.len()));
        for v in self.samples.iter().skip(skip) {
            let level = if top > 0.0 {
                ((v / top) * 8.0).ceil() as usize
            } else {
                0
            };
            out.push(BARS[level.min(8)]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_capped_and_keeps_the_newest() {
        let mut h = History::with_capacity(3);
        for v in 1..=5 {
            h.push(v as f64);
        }
        assert_eq!(h.iter().count(), 3);
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![3.0, 4.0, 5.0]);
        assert_eq!(h.latest(), Some(5.0));
        assert_eq!(h.max(), 5.0);
    }

    #[test]
    fn default_cap_is_a_minute_of_samples() {
        let mut h = History::default();
        for v in 0..(SAMPLES * 2) {
            h.push(v as f64);
        }
        assert_eq!(h.iter().count(), SAMPLES);
        assert_eq!(h.iter().next(), Some(SAMPLES as f64));
    }

    #[test]
    fn bad_samples_count_as_zero() {
        let mut h = History::with_capacity(4);
        h.push(f64::NAN);
        h.push(f64::INFINITY);
        h.push(-3.0);
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![0.0, 0.0, 0.0]);
        assert_eq!(History::with_capacity(0).cap, 1);
    }

    #[test]
    fn tail_takes_the_newest_samples() {
        let mut h = History::with_capacity(10);
        for v in [1.4, 2.6, 3.0, 4.0] {
            h.push(v);
        }
        assert_eq!(h.tail_u64(2), vec![3, 4]);
        assert_eq!(h.tail_u64(10), vec![1, 3, 3, 4]);
    }

    #[test]
    fn bars_are_right_aligned_and_scaled() {
        let mut h = History::with_capacity(10);
        assert_eq!(h.bars(3, 100.0), "   ");
        h.push(0.0);
        h.push(50.0);
        h.push(100.0);
        assert_eq!(h.bars(5, 100.0), "   ▄█");
        assert_eq!(h.bars(2, 100.0), "▄█");
        // A sample above the ceiling rescales the line.
        h.push(200.0);
        assert_eq!(h.bars(4, 100.0), " ▂▄█");
        assert_eq!(History::default().bars(0, 1.0), "");
    }
}
