//! Placement: which node runs each of the root supervisor's children. The manifest says where a
//! child may run (`node`, `nodes`, `placement = "any"`); the leader ([`super::leader`]) turns that
//! and the live members into assignments in the placement bucket; every node runs the children
//! assigned to its own incarnation ([`super::Cluster::placed_here`]).
//!
//! As OTP's distributed applications: a child stays where it runs while that node lives (no
//! rebalancing when nodes join); when its node goes down, a permanent or transient child is
//! assigned to a survivor; a temporary one is not restarted, as a supervisor never restarts one.
//! Unlike OTP, a child of `nodes = [..]` does not move back (take over) when a node earlier in its
//! list returns: a move stops a running child, and the list says where it may run, not where it
//! must.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::Restart;

/// Where a root child may run, from its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// Any live node (the default); the least loaded is chosen.
    #[default]
    Any,
    /// Only the named node: the child waits, unplaced, while that node is down.
    Node(String),
    /// The first live node of the list.
    Nodes(Vec<String>),
}

impl Placement {
    fn allows(&self, node: &str) -> bool {
        match self {
            Placement::Any => true,
            Placement::Node(only) => only == node,
            Placement::Nodes(list) => list.iter().any(|n| n == node),
        }
    }
}

/// One node incarnation that can take work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    pub name: String,
    pub incarnation: u64,
}

/// A child's assignment, as the placement bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub node: String,
    /// The incarnation of `node` it was given to: a node that restarts does not take back its
    /// previous incarnation's children unless the leader assigns them to it again.
    pub incarnation: u64,
}

/// What the leader knows of one root child.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub child: &'a str,
    pub placement: &'a Placement,
    pub restart: Restart,
}

/// The assignments to write: for each child whose assignment must change, its new one. `current`
/// holds the bucket's assignments; `live` the members up now. Pure, so that the rules are tested
/// on their own.
pub fn assign(
    wanted: &[Wanted<'_>],
    current: &BTreeMap<String, Assignment>,
    live: &[LiveNode],
) -> Vec<(String, Assignment)> {
    let is_live = |a: &Assignment| live.iter().any(|n| n.name == a.node && n.incarnation == a.incarnation);
    // Load counts what each live node runs (or will, after this pass), for `any`.
    let mut load: BTreeMap<&str, usize> = live.iter().map(|n| (n.name.as_str(), 0)).collect();
    for assignment in current.values().filter(|a| is_live(a)) {
        if let Some(count) = load.get_mut(assignment.node.as_str()) {
            *count += 1;
        }
    }
    let mut changes = Vec::new();
    for child in wanted {
        let existing = current.get(child.child);
        match existing {
            Some(assignment) if is_live(assignment) && child.placement.allows(&assignment.node) => continue,
            // Its node went down (or restarted): a temporary child is not restarted anywhere.
            Some(assignment) if !is_live(assignment) && child.restart == Restart::Temporary => continue,
            _ => {}
        }
        let chosen = match child.placement {
            Placement::Node(only) => live.iter().find(|n| &n.name == only),
            Placement::Nodes(list) => list.iter().find_map(|name| live.iter().find(|n| &n.name == name)),
            Placement::Any => live.iter().min_by_key(|n| (load.get(n.name.as_str()).copied().unwrap_or(0), &n.name)),
        };
        let Some(node) = chosen else { continue };
        if let Some(assignment) = existing.filter(|a| is_live(a))
            && let Some(count) = load.get_mut(assignment.node.as_str())
        {
            *count = count.saturating_sub(1);
        }
        *load.entry(node.name.as_str()).or_default() += 1;
        changes.push((child.child.to_string(), Assignment { node: node.name.clone(), incarnation: node.incarnation }));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, incarnation: u64) -> LiveNode {
        LiveNode { name: name.into(), incarnation }
    }

    fn at(node: &str, incarnation: u64) -> Assignment {
        Assignment { node: node.into(), incarnation }
    }

    #[test]
    fn unplaced_children_spread_over_the_least_loaded_nodes() {
        let any = Placement::Any;
        let wanted: Vec<Wanted> = ["a1", "a2", "a3", "a4"]
            .iter()
            .map(|c| Wanted { child: c, placement: &any, restart: Restart::Permanent })
            .collect();
        let changes = assign(&wanted, &BTreeMap::new(), &[node("x", 1), node("y", 2)]);
        let nodes: Vec<&str> = changes.iter().map(|(_, a)| a.node.as_str()).collect();
        assert_eq!(nodes, ["x", "y", "x", "y"]);
    }

    #[test]
    fn a_child_stays_where_it_runs_and_a_pinned_one_waits_for_its_node() {
        let any = Placement::Any;
        let pinned = Placement::Node("z".into());
        let wanted = [
            Wanted { child: "kept", placement: &any, restart: Restart::Permanent },
            Wanted { child: "pinned", placement: &pinned, restart: Restart::Permanent },
        ];
        let current = BTreeMap::from([("kept".to_string(), at("y", 2))]);
        let live = [node("x", 1), node("y", 2)];
        assert!(assign(&wanted, &current, &live).is_empty(), "kept stays on y; z is down, so pinned waits");
        let live = [node("x", 1), node("y", 2), node("z", 3)];
        assert_eq!(assign(&wanted, &current, &live), [("pinned".to_string(), at("z", 3))]);
    }

    #[test]
    fn a_downed_nodes_work_moves_except_temporary_children() {
        let any = Placement::Any;
        let list = Placement::Nodes(vec!["a".into(), "b".into(), "c".into()]);
        let wanted = [
            Wanted { child: "perm", placement: &any, restart: Restart::Permanent },
            Wanted { child: "trans", placement: &list, restart: Restart::Transient },
            Wanted { child: "temp", placement: &any, restart: Restart::Temporary },
        ];
        let current = BTreeMap::from([
            ("perm".to_string(), at("a", 1)),
            ("trans".to_string(), at("a", 1)),
            ("temp".to_string(), at("a", 1)),
        ]);
        // a is gone; b and c live, c with less load.
        let live = [node("b", 2), node("c", 3)];
        let changes = assign(&wanted, &current, &live);
        assert_eq!(changes, [("perm".to_string(), at("b", 2)), ("trans".to_string(), at("b", 2))]);
        // a restarted as a new incarnation: its old children are not its own again.
        let live = [node("a", 4), node("b", 2)];
        let changes = assign(&wanted, &current, &live);
        assert_eq!(changes, [("perm".to_string(), at("a", 4)), ("trans".to_string(), at("a", 4))]);
    }

    #[test]
    fn a_child_whose_placement_changed_moves_to_an_allowed_node() {
        let only_y = Placement::Node("y".into());
        let wanted = [Wanted { child: "c", placement: &only_y, restart: Restart::Permanent }];
        let current = BTreeMap::from([("c".to_string(), at("x", 1))]);
        let changes = assign(&wanted, &current, &[node("x", 1), node("y", 2)]);
        assert_eq!(changes, [("c".to_string(), at("y", 2))]);
    }
}
