//! Spaces written the way gymnasium prints them: `Discrete(2)`, `MultiDiscrete([3, 3, 2])`, `Box(-1.0, 1.0, (3,))`
//! (one bound for every value), `Box([-1.0, -2.0], [1.0, 2.0])` (per-value bounds) and
//! `Box(0, 255, (84, 84, 4), uint8)` (any shape, with a dtype: `float32`, the default, or `uint8`; `bool` reads as
//! uint8 with bounds 0 and 1, `True`/`False` as 1/0); `inf` and `-inf` allowed. Used by configs for envs the learner
//! does not build in.

use super::{Dtype, Space};
use std::fmt;
use std::str::FromStr;

/// Why a space's notation could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "space {text:?}: {reason} (expected Discrete(n), MultiDiscrete([n1, n2, ...]), Box(low, high, (dim, ...)), \
     Box(low, high, (dim, ...), uint8) or Box([low, ...], [high, ...]))"
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
        let (low, high, shape, dtype) = match args.as_slice() {
            [low, high] => (*low, *high, None, None),
            [low, high, shape] => (*low, *high, Some(*shape), None),
            [low, high, shape, dtype] => (*low, *high, Some(*shape), Some(*dtype)),
            _ => return Err(fail("Box takes low, high, an optional shape and an optional dtype")),
        };
        let dtype = dtype.map(parse_dtype).transpose().map_err(|d| fail(&format!("unknown dtype {d:?}")))?;
        let low = parse_bounds(low).ok_or_else(|| fail("bad low"))?;
        let high = parse_bounds(high).ok_or_else(|| fail("bad high"))?;
        let shape = match shape {
            Some(shape) => parse_shape(shape).ok_or_else(|| fail("bad shape"))?,
            None if low.len() == high.len() => vec![low.len()],
            None => return Err(fail("low and high differ in length (give a shape to broadcast a scalar)")),
        };
        Space::shaped(low, high, shape, dtype.unwrap_or_default()).map_err(|e| fail(&e.to_string()))
    }
}

/// `float32` or `uint8`, with or without `np.` / `dtype=`; `bool` is uint8 (0 and 1).
fn parse_dtype(s: &str) -> Result<Dtype, String> {
    let name = s.trim().trim_start_matches("dtype=").trim_start_matches("np.").trim_start_matches("numpy.");
    match name {
        "float32" => Ok(Dtype::Float32),
        "uint8" | "bool" => Ok(Dtype::Uint8),
        _ => Err(s.trim().to_string()),
    }
}

/// A shape as Python prints a tuple: `(3,)`, `(84, 84, 4)`.
pub(super) fn tuple(shape: &[usize]) -> String {
    match shape {
        [d] => format!("({d},)"),
        dims => format!("({})", dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Space::Discrete { n } => write!(f, "Discrete({n})"),
            Space::MultiDiscrete { nvec } => write!(f, "MultiDiscrete({nvec:?})"),
            Space::Box { low, high, shape, dtype } => {
                let uniform = |b: &[f32]| b.iter().all(|x| x.to_bits() == b[0].to_bits());
                let dims = tuple(shape);
                let dtype = match dtype {
                    Dtype::Float32 => String::new(),
                    Dtype::Uint8 => ", uint8".to_string(),
                };
                match (low.first(), high.first()) {
                    (Some(l), Some(h)) if uniform(low) && uniform(high) => {
                        if dtype.is_empty() {
                            write!(f, "Box({l:?}, {h:?}, {dims}{dtype})")
                        } else {
                            write!(f, "Box({l}, {h}, {dims}{dtype})")
                        }
                    }
                    _ if shape.len() == 1 && dtype.is_empty() => write!(f, "Box({low:?}, {high:?})"),
                    _ => write!(f, "Box({low:?}, {high:?}, {dims}{dtype})"),
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
        "True" | "true" => Some(1.0),
        "False" | "false" => Some(0.0),
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

/// `(d,)`, `(d)`, `d` or `(d1, d2, ...)`: a shape of any rank.
fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let inner = s.strip_prefix('(').and_then(|r| r.strip_suffix(')')).unwrap_or(s);
    inner.split(',').filter(|p| !p.trim().is_empty()).map(|p| p.trim().parse().ok()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_gymnasium_notation_and_prints_it_back() {
        assert_eq!("Discrete(3)".parse::<Space>().unwrap(), Space::Discrete { n: 3 });
        let b: Space = "Box(-inf, inf, (17,))".parse().unwrap();
        assert_eq!(b, Space::vector(vec![f32::NEG_INFINITY; 17], vec![f32::INFINITY; 17]));
        assert_eq!(b.to_string(), "Box(-inf, inf, (17,))");
        let per_dim: Space = " Box([-1.0, -2], [1, 2.5]) ".parse().unwrap();
        assert_eq!(per_dim, Space::vector(vec![-1.0, -2.0], vec![1.0, 2.5]));
        assert_eq!(per_dim.to_string().parse::<Space>().unwrap(), per_dim);
        assert_eq!("Box(-1, 1, 3)".parse::<Space>().unwrap().flat_dim(), 3);
        assert_eq!("Box([-1, 0], 1, (2,))".parse::<Space>().unwrap(), Space::vector(vec![-1.0, 0.0], vec![1.0, 1.0]));
        let cartpole = Space::vector(vec![-4.8, f32::MIN, -0.41887903, 1.0], vec![4.8, f32::MAX, 0.41887903, 2.0]);
        assert_eq!(cartpole.to_string().parse::<Space>().unwrap(), cartpole, "{cartpole}");
        let multi: Space = "MultiDiscrete([3, 3, 2])".parse().unwrap();
        assert_eq!(multi, Space::MultiDiscrete { nvec: vec![3, 3, 2] });
        assert_eq!(multi.to_string(), "MultiDiscrete([3, 3, 2])");
    }

    /// Images: any rank, uint8, gymnasium's and numpy's spellings, bool as uint8 in 0..=1.
    #[test]
    fn shaped_and_typed_boxes() {
        let image: Space = "Box(0, 255, (10, 10, 4), uint8)".parse().unwrap();
        assert_eq!(image, Space::shaped(vec![0.0], vec![255.0], vec![10, 10, 4], Dtype::Uint8).unwrap());
        assert_eq!((image.flat_dim(), image.dtype(), image.shape()), (400, Dtype::Uint8, vec![10, 10, 4]));
        assert_eq!(image.to_string(), "Box(0, 255, (10, 10, 4), uint8)");
        assert_eq!(image.describe(), "Box((10, 10, 4), uint8)");
        assert_eq!("Box(0, 255, (10, 10, 4), dtype=np.uint8)".parse::<Space>().unwrap(), image);
        let minatar: Space = "Box(False, True, (10, 10, 4), bool)".parse().unwrap();
        assert_eq!(minatar, Space::shaped(vec![0.0], vec![1.0], vec![10, 10, 4], Dtype::Uint8).unwrap());
        let matrix: Space = "Box(-1.0, 1.0, (2, 3), float32)".parse().unwrap();
        assert_eq!((matrix.flat_dim(), matrix.dtype()), (6, Dtype::Float32));
        assert_eq!(matrix.to_string(), "Box(-1.0, 1.0, (2, 3))");
        assert_eq!(matrix.to_string().parse::<Space>().unwrap(), matrix);
        let ramp: Space = "Box([0, 1, 2, 3], 255, (2, 2), uint8)".parse().unwrap();
        assert_eq!(ramp.to_string().parse::<Space>().unwrap(), ramp, "{ramp}");
        assert_eq!("Box(0, 1, (3,), float32)".parse::<Space>().unwrap(), Space::vector(vec![0.0; 3], vec![1.0; 3]));
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
            "Box(0, 256, (2, 2), uint8)",
            "Box(0.5, 255, (2,), uint8)",
            "Box(0, 1, (2, 0))",
            "Box(0, 1, (2,), int64)",
            "Box(0, 1, (2,), uint8, 3)",
        ] {
            let e = bad.parse::<Space>().unwrap_err();
            assert!(e.to_string().contains(bad.trim()), "{e}");
        }
    }
}
