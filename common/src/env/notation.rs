//! Spaces written the way gymnasium prints them: `Discrete(2)`, `MultiDiscrete([3, 3, 2])`, `Box(-1.0, 1.0, (3,))`
//! (one bound for every dimension) or `Box([-1.0, -2.0], [1.0, 2.0])` (per-dimension bounds); `inf` and `-inf`
//! allowed. Used by
//! configs for envs the learner does not build in.

use super::Space;
use std::fmt;
use std::str::FromStr;

/// Why a space's notation could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "space {text:?}: {reason} (expected Discrete(n), MultiDiscrete([n1, n2, ...]), Box(low, high, (dim,)) or \
     Box([low, ...], [high, ...]))"
)]
pub struct NotationError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Space {
    type Err = NotationError;

    fn from_str(text: &str) -> Result<Self, NotationError> {
        let fail = |reason: &str| NotationError { text: text.to_string(), reason: reason.to_string() };
        let s = text.trim();
        if let Some(inner) = s.strip_prefix("Discrete(").and_then(|r| r.strip_suffix(')')) {
            return match inner.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Space::Discrete { n }),
                _ => Err(fail("n must be a whole number, at least 1")),
            };
        }
        if let Some(inner) = s.strip_prefix("MultiDiscrete(").and_then(|r| r.strip_suffix(')')) {
            let list = inner.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']'));
            let nvec: Option<Vec<usize>> = list
                .map(|l| l.split(',').filter(|p| !p.trim().is_empty()).map(|p| p.trim().parse().ok()).collect())
                .and_then(|v| v);
            return match nvec {
                Some(nvec) if !nvec.is_empty() && !nvec.contains(&0) => Ok(Space::MultiDiscrete { nvec }),
                _ => Err(fail("nvec must be a list [n1, n2, ...] of whole numbers, each at least 1")),
            };
        }
        let inner = s.strip_prefix("Box(").and_then(|r| r.strip_suffix(')')).ok_or_else(|| fail("unknown space"))?;
        let args = split_top_level(inner).ok_or_else(|| fail("unbalanced brackets"))?;
        let (low, high, shape) = match args.as_slice() {
            [low, high] => (*low, *high, None),
            [low, high, shape] => (*low, *high, Some(parse_shape(shape).ok_or_else(|| fail("bad shape"))?)),
            _ => return Err(fail("Box takes low, high and an optional shape")),
        };
        let low = parse_bounds(low).ok_or_else(|| fail("bad low"))?;
        let high = parse_bounds(high).ok_or_else(|| fail("bad high"))?;
        let dim = match (shape, low.len(), high.len()) {
            (Some(d), l, h) if (l == 1 || l == d) && (h == 1 || h == d) => d,
            (Some(_), _, _) => return Err(fail("bounds do not fit the shape")),
            (None, l, h) if l == h && l >= 1 => l,
            (None, _, _) => return Err(fail("low and high differ in length (give a shape to broadcast a scalar)")),
        };
        if dim == 0 {
            return Err(fail("a Box needs at least one dimension"));
        }
        let widen = |b: Vec<f32>| if b.len() == 1 { vec![b[0]; dim] } else { b };
        let (low, high) = (widen(low), widen(high));
        if low.iter().zip(&high).any(|(l, h)| l.is_nan() || h.is_nan() || l > h) {
            return Err(fail("every low must be at most its high"));
        }
        Ok(Space::Box { low, high })
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Space::Discrete { n } => write!(f, "Discrete({n})"),
            Space::MultiDiscrete { nvec } => write!(f, "MultiDiscrete({nvec:?})"),
            Space::Box { low, high } => {
                let uniform = |b: &[f32]| b.iter().all(|x| x.to_bits() == b[0].to_bits());
                if !low.is_empty() && uniform(low) && uniform(high) {
                    write!(f, "Box({:?}, {:?}, ({},))", low[0], high[0], low.len())
                } else {
                    write!(f, "Box({low:?}, {high:?})")
                }
            }
        }
    }
}

/// Splits at the commas that are not inside brackets or parentheses; `None` if they do not balance.
fn split_top_level(s: &str) -> Option<Vec<&str>> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    parts.push(s[start..].trim());
    (depth == 0).then_some(parts)
}

fn parse_number(s: &str) -> Option<f32> {
    match s.trim() {
        "inf" | "+inf" | "np.inf" => Some(f32::INFINITY),
        "-inf" | "-np.inf" => Some(f32::NEG_INFINITY),
        t => t.parse::<f32>().ok().filter(|x| !x.is_nan()),
    }
}

/// A scalar or a `[a, b, ...]` list.
fn parse_bounds(s: &str) -> Option<Vec<f32>> {
    match s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(list) => list.split(',').filter(|p| !p.trim().is_empty()).map(parse_number).collect(),
        None => parse_number(s).map(|x| vec![x]),
    }
}

/// `(d,)`, `(d)` or `d`: a one-dimensional shape.
fn parse_shape(s: &str) -> Option<usize> {
    let inner = s.strip_prefix('(').and_then(|r| r.strip_suffix(')')).unwrap_or(s);
    inner.trim().trim_end_matches(',').trim().parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_gymnasium_notation_and_prints_it_back() {
        assert_eq!("Discrete(3)".parse::<Space>().unwrap(), Space::Discrete { n: 3 });
        let b: Space = "Box(-inf, inf, (17,))".parse().unwrap();
        assert_eq!(b, Space::Box { low: vec![f32::NEG_INFINITY; 17], high: vec![f32::INFINITY; 17] });
        assert_eq!(b.to_string(), "Box(-inf, inf, (17,))");
        let per_dim: Space = " Box([-1.0, -2], [1, 2.5]) ".parse().unwrap();
        assert_eq!(per_dim, Space::Box { low: vec![-1.0, -2.0], high: vec![1.0, 2.5] });
        assert_eq!(per_dim.to_string().parse::<Space>().unwrap(), per_dim);
        assert_eq!("Box(-1, 1, 3)".parse::<Space>().unwrap().flat_dim(), 3);
        assert_eq!(
            "Box([-1, 0], 1, (2,))".parse::<Space>().unwrap(),
            Space::Box { low: vec![-1.0, 0.0], high: vec![1.0, 1.0] }
        );
        let cartpole =
            Space::Box { low: vec![-4.8, f32::MIN, -0.41887903, 1.0], high: vec![4.8, f32::MAX, 0.41887903, 2.0] };
        assert_eq!(cartpole.to_string().parse::<Space>().unwrap(), cartpole, "{cartpole}");
        let multi: Space = "MultiDiscrete([3, 3, 2])".parse().unwrap();
        assert_eq!(multi, Space::MultiDiscrete { nvec: vec![3, 3, 2] });
        assert_eq!(multi.to_string(), "MultiDiscrete([3, 3, 2])");
    }

    #[test]
    fn bad_notation_says_why() {
        for bad in [
            "Discrete(0)",
            "Discrete(x)",
            "Tuple(1)",
            "Box(1, -1, (2,))",
            "Box([1, 2], [3])",
            "Box(0, 1, (0,))",
            "Box([0, 1], [1, 2], (3,))",
            "Box(nan, 1, (1,))",
            "Box([0, 1], [1, 2]",
            "MultiDiscrete([])",
            "MultiDiscrete([3, 0])",
            "MultiDiscrete(3)",
            "MultiDiscrete([3, x])",
        ] {
            let e = bad.parse::<Space>().unwrap_err();
            assert!(e.to_string().contains(bad.trim()), "{e}");
        }
    }
}
