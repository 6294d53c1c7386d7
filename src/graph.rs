//! The service dependency graph: cycle detection and start levels (petgraph).

use std::collections::BTreeMap;
use std::sync::Arc;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::config::ServiceConfig;

/// Edges point from a service to each service it depends on, among `services`.
fn build<'a>(services: &BTreeMap<&'a str, &'a ServiceConfig>) -> DiGraph<&'a str, ()> {
    let mut g = DiGraph::new();
    let index: BTreeMap<&str, NodeIndex> = services.keys().map(|&n| (n, g.add_node(n))).collect();
    for (name, svc) in services {
        for dep in svc.depends_on.0.keys() {
            if let Some(&to) = index.get(dep.as_str()) {
                g.add_edge(index[name], to, ());
            }
        }
    }
    g
}

/// A dependency cycle as `[a, b, a]`, smallest name first, or `None`.
pub fn find_cycle(services: &BTreeMap<String, Arc<ServiceConfig>>) -> Option<Vec<String>> {
    // Each member of a cycle depends on the next: a service that depends on nothing is on
    // none, and is left out of the graph (most of a large file, often).
    let depending: BTreeMap<&str, &ServiceConfig> = services
        .iter()
        .filter(|(_, s)| !s.depends_on.0.is_empty())
        .map(|(n, s)| (n.as_str(), &**s))
        .collect();
    let g = build(&depending);
    // Most files have none: one walk says so, without a component per service.
    if !petgraph::algo::is_cyclic_directed(&g) {
        return None;
    }
    let mut cycles: Vec<Vec<String>> = tarjan_scc(&g)
        .into_iter()
        .filter(|scc| scc.len() > 1 || g.contains_edge(scc[0], scc[0]))
        .map(|scc| {
            // Walk the cycle from its smallest member, following edges inside the component.
            let start = *scc.iter().min_by_key(|n| g[**n]).expect("non-empty");
            let mut path = vec![g[start].to_owned()];
            let mut at = start;
            loop {
                let next = g
                    .neighbors(at)
                    .filter(|n| scc.contains(n))
                    .min_by_key(|n| g[*n])
                    .expect("a strongly connected component has an edge inside it");
                path.push(g[next].to_owned());
                if next == start || path.len() > scc.len() {
                    break;
                }
                at = next;
            }
            path
        })
        .collect();
    cycles.sort();
    cycles.into_iter().next()
}

/// Start level of each service: 0 with no dependencies, else one more than its deepest
/// dependency. Only edges between services in `names` count (skipped dependencies are
/// satisfied elsewhere). The file has been checked for cycles.
pub fn levels(
    services: &BTreeMap<String, Arc<ServiceConfig>>,
    names: &[String],
) -> BTreeMap<String, usize> {
    fn level_of(
        name: &str,
        services: &BTreeMap<String, Arc<ServiceConfig>>,
        names: &std::collections::HashSet<&str>,
        memo: &mut BTreeMap<String, usize>,
    ) -> usize {
        if let Some(l) = memo.get(name) {
            return *l;
        }
        let level = services[name]
            .depends_on
            .0
            .keys()
            .filter(|d| names.contains(d.as_str()))
            .map(|d| level_of(d, services, names, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(name.to_owned(), level);
        level
    }
    // A set: looked up once per dependency edge (a slice made this quadratic).
    let selected: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut memo = BTreeMap::new();
    for n in names {
        level_of(n, services, &selected, &mut memo);
    }
    // Only names and their selected dependencies were looked at: every key is in `names`.
    memo
}

/// `names` in start order: by level, then by name.
pub fn start_order(levels: &BTreeMap<String, usize>) -> Vec<String> {
    let mut v: Vec<(&usize, &String)> = levels.iter().map(|(n, l)| (l, n)).collect();
    v.sort();
    v.into_iter().map(|(_, n)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(yaml: &str) -> BTreeMap<String, Arc<ServiceConfig>> {
        let file: crate::config::UpFile = serde_yaml::from_str(yaml).unwrap();
        file.services.0
    }

    /// A cycle is found whatever depends on nothing around it, walked from its smallest
    /// member; a service that depends on itself is one; a chain is none.
    #[test]
    fn cycles_are_found_among_the_services_that_depend_on_something() {
        let run = "run: {command: [x]}";
        let cycle = services(&format!(
            "services:\n  z: {{{run}, depends_on: [c]}}\n  c: {{{run}, depends_on: [b]}}\n  b: {{{run}, depends_on: [c, free]}}\n  free: {{{run}}}\n  a: {{{run}, depends_on: [free]}}\n"
        ));
        assert_eq!(
            find_cycle(&cycle),
            Some(vec!["b".into(), "c".into(), "b".into()])
        );
        let own = services(&format!(
            "services:\n  a: {{{run}}}\n  s: {{{run}, depends_on: [s]}}\n"
        ));
        assert_eq!(find_cycle(&own), Some(vec!["s".into(), "s".into()]));
        let chain = services(&format!(
            "services:\n  a: {{{run}, depends_on: [b]}}\n  b: {{{run}, depends_on: [c]}}\n  c: {{{run}}}\n"
        ));
        assert_eq!(find_cycle(&chain), None);
    }
}
