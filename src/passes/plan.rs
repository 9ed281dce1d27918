//! Memory planning: every buffer is live from the first step that writes it to the last step
//! that reads any node placed in it (the input from the start, since the caller writes it before
//! the first step; the graph outputs to the end, since the caller reads them after; staging and
//! scratch buffers only during their node's step); buffers
//! whose lifetimes overlap get disjoint ranges of one arena, the others may share memory.
//!
//! Offsets are assigned largest buffer first, each at the lowest 64-byte aligned offset that
//! overlaps no already-placed buffer live at the same time. The executor allocates the arena
//! once.

use super::Pass;
use crate::ir::Graph;

pub struct Plan;

/// Arena offsets are multiples of this many f32 (64 bytes).
const ALIGN: usize = 16;

impl Pass for Plan {
    fn name(&self) -> &'static str {
        "plan"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), String> {
        let order = graph.topo_order().ok_or("the graph has a cycle")?;
        let index: std::collections::HashMap<_, _> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let end = order.len();
        let n = graph.buffers.len();
        let mut live: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut extend = |b: usize, from: usize, to: usize| {
            let l = live[b].get_or_insert((from, to));
            *l = (l.0.min(from), l.1.max(to));
        };
        for (i, &ix) in order.iter().enumerate() {
            let Some(place) = &graph.node(ix).place else {
                return Err(format!("`{}` was not placed", graph.node(ix).name));
            };
            let last_read = graph.users_of(ix).iter().map(|u| index[u]).max().unwrap_or(i);
            let to = if graph.outputs.contains(&ix) {
                end
            } else {
                last_read.max(i)
            };
            let from = if graph.inputs.contains(&ix) { 0 } else { i };
            extend(place.buffer, from, to);
            for &(_, b) in &place.staged {
                extend(b, i, i);
            }
            if let Some(b) = place.scratch {
                extend(b, i, i);
            }
        }
        let mut by_size: Vec<usize> = (0..n).collect();
        by_size.sort_by_key(|&b| (std::cmp::Reverse(graph.buffers[b].len()), b));
        let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new();
        let mut arena = 0;
        for b in by_size {
            let Some((from, to)) = live[b] else {
                // A buffer nothing was placed in takes no memory.
                graph.buffers[b].offset = Some(0);
                continue;
            };
            let len = graph.buffers[b].len().div_ceil(ALIGN) * ALIGN;
            let mut clashes: Vec<(usize, usize)> = placed
                .iter()
                .filter(|(_, _, (f, t))| *f <= to && from <= *t)
                .map(|&(o, l, _)| (o, o + l))
                .collect();
            clashes.sort_unstable();
            let mut offset = 0;
            for (lo, hi) in clashes {
                if offset + len <= lo {
                    break;
                }
                offset = offset.max(hi);
            }
            placed.push((offset, len, (from, to)));
            graph.buffers[b].offset = Some(offset);
            arena = arena.max(offset + len);
        }
        graph.arena = Some(arena);
        Ok(())
    }
}
