//! What a head reads: a trunk (convolutions and activated hidden layers), then, for a recurrent model, a core
//! that carries a state along each sequence. A shared trunk has one body feeding both heads; separate trunks with a
//! core have one body each (the actor's reads part 0 of every env's state, the critic's part 1:
//! [`crate::model::StateLayout`]).

use super::{Recurrent, SeqTrace, Sequences, Tower, Trace};

/// A trunk and its recurrent core (if any); offsets relative to the span of the flat vector it is given.
#[derive(Debug, Clone)]
pub struct Body {
    /// Observation to features (the activation after every layer).
    pub trunk: Tower,
    /// Features to the heads' input, across steps (`None`: memoryless).
    pub core: Option<Recurrent>,
}

/// What one [`Body::forward`] kept for its backward pass.
#[derive(Debug, Clone, Default)]
pub struct BodyTrace {
    /// The trunk's trace.
    pub trunk: Trace,
    /// The core's trace.
    pub core: SeqTrace,
    /// `[B, core state]` this body's part of each sequence's initial state.
    state0: Vec<f32>,
    /// The last forward pass ran the core.
    cored: bool,
}

impl BodyTrace {
    /// `[n, width]` the features the heads read: the core's outputs, or the trunk's.
    pub fn output(&self) -> &[f32] {
        match self.cored {
            true => self.core.output(),
            false => self.trunk.output(),
        }
    }

    /// Appends this body's state after row `row` (nothing without a core) to `out`.
    pub fn state_after(&self, row: usize, out: &mut Vec<f32>) {
        if self.cored {
            self.core.state_after(row, out);
        }
    }

    /// Marks the trace as not holding a core's pass (a body that did not run).
    pub fn idle(&mut self) {
        self.cored = false;
    }
}

impl Body {
    /// Runs `n` rows of `x` through the trunk and, for a recurrent body given `seq`, through the core along the
    /// sequences, from part `part` of each sequence's initial state (a state row holds one core's state per body).
    pub fn forward(&self, params: &[f32], x: &[f32], n: usize, seq: Option<Sequences>, part: usize, t: &mut BodyTrace) {
        self.trunk.forward(params, x, n, &mut t.trunk);
        t.cored = false;
        let (Some(core), Some(seq)) = (&self.core, seq) else { return };
        let (s, b) = (core.state_dim(), seq.starts.len() / seq.steps.max(1));
        let width = seq.state0.len() / b.max(1);
        // Callers check a state's length against the network's StateLayout (rollouts, `Policy::act`).
        debug_assert!(width.is_multiple_of(s) && (part + 1) * s <= width, "state rows of {width} for part {part}");
        t.state0.clear();
        for row in seq.state0.chunks_exact(width.max(1)) {
            t.state0.extend_from_slice(&row[part * s..(part + 1) * s]);
        }
        core.forward(params, t.trunk.output(), seq.steps, &t.state0, seq.starts, &mut t.core);
        t.cored = true;
    }

    /// Backpropagates `d_features` (the loss gradient w.r.t. [`BodyTrace::output`]) through the core and the
    /// trunk into the parameter gradients `grads`; `d_features` and `scratch` are scratch afterwards. `starts` as
    /// given to the forward pass.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        starts: &[bool],
        t: &mut BodyTrace,
        d_features: &mut Vec<f32>,
        grads: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        if let (Some(core), true) = (&self.core, t.cored) {
            core.backward(params, t.trunk.output(), starts, &mut t.core, d_features, grads, scratch);
            std::mem::swap(d_features, scratch);
        }
        self.trunk.backward(params, x, &mut t.trunk, d_features, grads, scratch, false);
    }
}

/// One side of separate trunks: observation → body → head, or, memoryless, one tower from the observation to
/// the logits (or means) or the value.
#[derive(Debug, Clone)]
pub struct Branch {
    /// The trunk and core before a one-layer head (`None`: memoryless; `head` is the whole trunk).
    pub body: Option<Body>,
    /// To the logits, means or value.
    pub head: Tower,
}

impl Branch {
    /// What the head reads for `n` rows of `x` (`params`: the branch's span): `x` itself (memoryless), or the
    /// body's output, run from part `part` of each sequence's state into `body_t`.
    pub fn features<'a>(
        &self,
        params: &[f32],
        x: &'a [f32],
        n: usize,
        seq: Option<Sequences>,
        part: usize,
        body_t: &'a mut BodyTrace,
    ) -> &'a [f32] {
        match &self.body {
            None => {
                body_t.idle();
                x
            }
            Some(body) => {
                body.forward(params, x, n, seq, part, body_t);
                body_t.output()
            }
        }
    }

    /// Runs `n` rows of `x` through the branch ([`Branch::features`], then the head); the output is in `head_t`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        params: &[f32],
        x: &[f32],
        n: usize,
        seq: Option<Sequences>,
        part: usize,
        body_t: &mut BodyTrace,
        head_t: &mut Trace,
    ) {
        let input = self.features(params, x, n, seq, part, body_t);
        self.head.forward(params, input, n, head_t);
    }
}
