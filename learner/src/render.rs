//! `learner render`: one episode of a saved policy (deterministic actions) drawn as an animated GIF.
//!
//! Frames are drawn from the env's internal state (`env.unwrapped.state` layout) into a small indexed canvas with
//! a fixed palette (lines, filled rectangles, circles), after gymnasium's own pictures of the classic-control
//! tasks, and encoded with the `gif` crate: one frame for the initial state and one per step.

use crate::error::{Error, Result};
use crate::eval::{SavedPolicy, play_episode};
use common::env::TimeLimit;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Canvas width in pixels.
pub const WIDTH: u16 = 400;
/// Canvas height in pixels.
pub const HEIGHT: u16 = 300;

/// The fixed palette (RGB), indexed by the `Color` constants.
const PALETTE: [[u8; 3]; 8] = [
    [255, 255, 255], // white
    [0, 0, 0],       // black
    [202, 152, 101], // pole brown
    [129, 132, 203], // axle blue
    [0, 204, 204],   // acrobot cyan
    [204, 204, 0],   // flag yellow
    [150, 150, 150], // grey
    [220, 40, 40],   // red
];

type Color = u8;
const WHITE: Color = 0;
const BLACK: Color = 1;
const BROWN: Color = 2;
const BLUE: Color = 3;
const CYAN: Color = 4;
const YELLOW: Color = 5;
const GREY: Color = 6;
const RED: Color = 7;

/// An indexed-colour image with y pointing up (world convention); row 0 of the buffer is the top.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<Color>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: u16, height: u16) -> Self {
        let (width, height) = (usize::from(width), usize::from(height));
        Self { width, height, pixels: vec![WHITE; width * height] }
    }

    /// Palette indices, row-major from the top row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Paints white.
    pub fn clear(&mut self) {
        self.pixels.fill(WHITE);
    }

    /// The colour at (x, y), y up; None outside.
    pub fn get(&self, x: usize, y: usize) -> Option<Color> {
        (x < self.width && y < self.height).then(|| self.pixels[(self.height - 1 - y) * self.width + x])
    }

    /// Colours every pixel whose centre satisfies `inside`, scanning the bounding box `[x0, x1] × [y0, y1]`.
    fn fill_where(&mut self, (x0, y0, x1, y1): (f64, f64, f64, f64), c: Color, inside: impl Fn(f64, f64) -> bool) {
        let clampx = |v: f64| v.clamp(0.0, self.width as f64) as usize;
        let clampy = |v: f64| v.clamp(0.0, self.height as f64) as usize;
        let (xa, xb, ya, yb) = (clampx(x0.floor()), clampx(x1.ceil()), clampy(y0.floor()), clampy(y1.ceil()));
        for y in ya..yb {
            let row = (self.height - 1 - y) * self.width;
            for x in xa..xb {
                if inside(x as f64 + 0.5, y as f64 + 0.5) {
                    self.pixels[row + x] = c;
                }
            }
        }
    }

    /// Axis-aligned filled rectangle.
    pub fn rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: Color) {
        let (xa, xb, ya, yb) = (x0.min(x1), x0.max(x1), y0.min(y1), y0.max(y1));
        self.fill_where((xa, ya, xb, yb), c, |x, y| x >= xa && x <= xb && y >= ya && y <= yb);
    }

    /// Filled disc.
    pub fn circle(&mut self, cx: f64, cy: f64, r: f64, c: Color) {
        self.fill_where((cx - r, cy - r, cx + r, cy + r), c, |x, y| (x - cx).powi(2) + (y - cy).powi(2) <= r * r);
    }

    /// A segment `width` pixels thick with square ends (a rotated rectangle).
    pub fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), width: f64, c: Color) {
        let h = (width / 2.0).max(0.5);
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len2 = dx * dx + dy * dy;
        let bbox = (x0.min(x1) - h, y0.min(y1) - h, x0.max(x1) + h, y0.max(y1) + h);
        self.fill_where(bbox, c, |x, y| {
            let t = if len2 > 0.0 { ((x - x0) * dx + (y - y0) * dy) / len2 } else { 0.0 };
            let t = t.clamp(0.0, 1.0);
            (x - x0 - t * dx).powi(2) + (y - y0 - t * dy).powi(2) <= h * h
        });
    }
}

/// Draws one frame of `env` from its internal `state`; the layout is the env's `Dynamics::state`.
pub fn draw(env: &str, state: &[f64], canvas: &mut Canvas) -> Result<()> {
    canvas.clear();
    let s = |i: usize| state.get(i).copied().unwrap_or(f64::NAN);
    match env {
        "CartPole-v1" => cartpole(canvas, s(0), s(2)),
        "Pendulum-v1" => pendulum(canvas, s(0)),
        "Acrobot-v1" => acrobot(canvas, s(0), s(1)),
        "MountainCar-v0" => mountain_car(canvas, s(0), 0.5),
        "MountainCarContinuous-v0" => mountain_car(canvas, s(0), 0.45),
        other => return Err(Error::Internal(format!("no drawing for env {other}"))),
    }
    Ok(())
}

/// Gymnasium's picture: cart on a track (x in ±2.4 spans the width), pole of length 2·0.5 hinged on the cart.
fn cartpole(c: &mut Canvas, x: f64, theta: f64) {
    let (w, h) = (c.width as f64, c.height as f64);
    let scale = w / 4.8;
    let (cart_w, cart_h, track_y) = (0.6 * scale, 0.36 * scale, 0.3 * h);
    let cx = w / 2.0 + x * scale;
    c.line((0.0, track_y), (w, track_y), 1.0, BLACK);
    c.rect(cx - cart_w / 2.0, track_y - cart_h / 2.0, cx + cart_w / 2.0, track_y + cart_h / 2.0, BLACK);
    let axle = (cx, track_y + cart_h / 4.0);
    let pole_len = 1.0 * scale;
    let tip = (axle.0 + pole_len * theta.sin(), axle.1 + pole_len * theta.cos());
    c.line(axle, tip, 0.12 * scale, BROWN);
    c.circle(axle.0, axle.1, 0.06 * scale, BLUE);
}

/// A rod of length 1 around the centre; θ = 0 points up, positive θ turns anticlockwise.
fn pendulum(c: &mut Canvas, theta: f64) {
    let (w, h) = (c.width as f64, c.height as f64);
    let scale = h / 2.0 / 1.2;
    let centre = (w / 2.0, h / 2.0);
    let end = (centre.0 - scale * theta.sin(), centre.1 + scale * theta.cos());
    c.line(centre, end, 0.2 * scale, RED);
    c.circle(end.0, end.1, 0.1 * scale, RED);
    c.circle(centre.0, centre.1, 0.05 * scale, BLACK);
}

/// Two links of length 1 hanging from the centre (θ = 0 is down); the goal line sits 1 above the pivot.
fn acrobot(c: &mut Canvas, theta1: f64, theta2: f64) {
    let (w, h) = (c.width as f64, c.height as f64);
    let scale = h / 2.0 / 2.2;
    let pivot = (w / 2.0, h / 2.0);
    let p1 = (pivot.0 + scale * theta1.sin(), pivot.1 - scale * theta1.cos());
    let p2 = (p1.0 + scale * (theta1 + theta2).sin(), p1.1 - scale * (theta1 + theta2).cos());
    c.line((0.0, pivot.1 + scale), (w, pivot.1 + scale), 1.0, BLACK);
    c.line(pivot, p1, 0.2 * scale, BLUE);
    c.line(p1, p2, 0.2 * scale, BLUE);
    c.circle(pivot.0, pivot.1, 0.1 * scale, CYAN);
    c.circle(p1.0, p1.1, 0.1 * scale, CYAN);
}

/// The hill `y = 0.45 sin(3x) + 0.55` over x in [−1.2, 0.6], the car on it and the goal flag.
fn mountain_car(c: &mut Canvas, pos: f64, goal: f64) {
    let (w, h) = (c.width as f64, c.height as f64);
    let scale = w / 1.8;
    let to_px = |x: f64| ((x + 1.2) * scale, (0.45 * (3.0 * x).sin() + 0.55) * scale * 0.8 + 0.05 * h);
    let mut prev = to_px(-1.2);
    for i in 1..=100 {
        let p = to_px(-1.2 + 1.8 * f64::from(i) / 100.0);
        c.line(prev, p, 2.0, BLACK);
        prev = p;
    }
    let (fx, fy) = to_px(goal);
    c.line((fx, fy), (fx, fy + 40.0), 2.0, BLACK);
    c.rect(fx, fy + 28.0, fx + 22.0, fy + 40.0, YELLOW);
    // The car: a body tilted along the slope, resting on two wheels.
    let (x, y) = to_px(pos);
    let slope = 0.45 * 3.0 * (3.0 * pos).cos() * 0.8;
    let (ux, uy) = (1.0 / (1.0 + slope * slope).sqrt(), slope / (1.0 + slope * slope).sqrt());
    let (nx, ny) = (-uy, ux);
    let (half, lift, wheel) = (20.0, 14.0, 5.0);
    let body = |along: f64, up: f64| (x + along * ux + up * nx, y + along * uy + up * ny);
    c.line(body(-half + 5.0, lift), body(half - 5.0, lift), 14.0, GREY);
    for along in [-half + 8.0, half - 8.0] {
        let (wx, wy) = body(along, wheel);
        c.circle(wx, wy, wheel, BLACK);
    }
}

/// How to render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Seed of the episode's reset.
    pub seed: u64,
    /// At most this many frames are drawn (the episode still runs to its end).
    pub max_frames: usize,
    /// Delay between frames in hundredths of a second.
    pub frame_delay_cs: u16,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { seed: 0, max_frames: 1000, frame_delay_cs: 3 }
    }
}

/// What was rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderReport {
    /// Env id.
    pub env: String,
    /// Frames in the GIF: the initial state plus one per step, capped at `max_frames`.
    pub frames: usize,
    /// The episode's return.
    pub episode_return: f64,
    /// The episode's length in steps.
    pub episode_length: u32,
}

/// Plays one deterministic episode of the policy in `checkpoint` and writes it to `out` as an animated GIF.
pub fn render(checkpoint: &Path, out: &Path, opts: &RenderOptions) -> Result<RenderReport> {
    let mut saved = SavedPolicy::load(checkpoint)?;
    let env_id = saved.env.clone();
    // Fail before playing if the env has no drawing.
    draw(&env_id, &[], &mut Canvas::new(1, 1))?;
    let gif_err = |e: gif::EncodingError| Error::Internal(format!("cannot write {}: {e}", out.display()));
    let file = std::fs::File::create(out).map_err(Error::io(out))?;
    let palette: Vec<u8> = PALETTE.iter().flatten().copied().collect();
    let mut encoder = gif::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT, &palette).map_err(gif_err)?;
    encoder.set_repeat(gif::Repeat::Infinite).map_err(gif_err)?;
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let mut frames = 0usize;
    let mut failure: Option<Error> = None;
    let mut on_step = |env: &mut TimeLimit| {
        if frames >= opts.max_frames || failure.is_some() {
            return;
        }
        let state = env.unwrapped().state();
        let result = draw(&env_id, &state, &mut canvas).and_then(|()| {
            let mut frame = gif::Frame::from_indexed_pixels(WIDTH, HEIGHT, canvas.pixels(), None);
            frame.delay = opts.frame_delay_cs;
            encoder.write_frame(&frame).map_err(gif_err)
        });
        match result {
            Ok(()) => frames += 1,
            Err(e) => failure = Some(e),
        }
    };
    let mut env = common::env::make(&env_id)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let reset_seed = crate::eval::episode_seed(opts.seed, 0);
    let (episode_return, episode_length) =
        play_episode(&mut saved.policy, &mut env, reset_seed, true, &mut rng, &mut on_step)?;
    if let Some(e) = failure {
        return Err(e);
    }
    let mut writer = encoder.into_inner().map_err(Error::io(out))?;
    std::io::Write::flush(&mut writer).map_err(Error::io(out))?;
    Ok(RenderReport { env: env_id, frames, episode_return, episode_length })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn primitives_paint_where_expected() {
        let mut c = Canvas::new(20, 10);
        c.rect(2.0, 2.0, 5.0, 4.0, RED);
        assert_eq!(c.get(3, 3), Some(RED));
        assert_eq!(c.get(6, 3), Some(WHITE));
        // Row 0 of the buffer is the top (y = 9).
        c.circle(10.0, 9.0, 1.0, BLUE);
        assert_eq!(c.pixels()[10], BLUE);
        c.line((0.0, 0.5), (19.9, 0.5), 1.0, BLACK);
        assert!((0..20).all(|x| c.get(x, 0) == Some(BLACK)));
        assert_eq!(c.get(20, 0), None);
        c.clear();
        assert!(c.pixels().iter().all(|&p| p == WHITE));
    }

    #[test]
    fn every_env_draws_something_that_moves() {
        for (env, a, b) in [
            ("CartPole-v1", vec![0.0, 0.0, 0.0, 0.0], vec![1.0, 0.0, 0.2, 0.0]),
            ("Pendulum-v1", vec![0.0, 0.0], vec![2.0, 0.0]),
            ("Acrobot-v1", vec![0.0, 0.0, 0.0, 0.0], vec![1.0, 0.5, 0.0, 0.0]),
            ("MountainCar-v0", vec![-0.5, 0.0], vec![0.3, 0.0]),
            ("MountainCarContinuous-v0", vec![-0.5, 0.0], vec![0.3, 0.0]),
        ] {
            let (mut x, mut y) = (Canvas::new(WIDTH, HEIGHT), Canvas::new(WIDTH, HEIGHT));
            draw(env, &a, &mut x).unwrap();
            draw(env, &b, &mut y).unwrap();
            assert!(x.pixels().iter().any(|&p| p != WHITE), "{env}: blank");
            assert_ne!(x, y, "{env}: the state does not show");
        }
        assert!(draw("Nope-v0", &[], &mut Canvas::new(1, 1)).is_err());
    }

    #[test]
    fn renders_a_gif_with_one_frame_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = crate::eval::tests::short_run(dir.path(), "CartPole-v1", &[]);
        let model = run_dir.join("model.safetensors");
        let out = dir.path().join("episode.gif");
        let report = render(&model, &out, &RenderOptions { seed: 3, ..Default::default() }).unwrap();
        assert_eq!(report.env, "CartPole-v1");
        assert_eq!(report.frames, report.episode_length as usize + 1);

        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..6], b"GIF89a");
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), WIDTH);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), HEIGHT);
        assert_eq!(bytes.last(), Some(&0x3b), "GIF trailer");
        let mut decoder = gif::DecodeOptions::new().read_info(bytes.as_slice()).unwrap();
        let mut n = 0;
        while let Some(frame) = decoder.read_next_frame().unwrap() {
            assert_eq!((frame.width, frame.height, frame.delay), (WIDTH, HEIGHT, 3));
            n += 1;
        }
        assert_eq!(n, report.frames);

        let capped = render(&model, &out, &RenderOptions { seed: 3, max_frames: 4, ..Default::default() }).unwrap();
        assert_eq!(capped.frames, 4.min(report.frames));
        assert_eq!(capped.episode_length, report.episode_length, "same seed, same deterministic episode");
    }
}
