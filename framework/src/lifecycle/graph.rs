//! The dependency graph of a runner's services: names checked, dependencies
//! resolved to indices, a start order (dependencies first), cycles named.

use std::collections::HashMap;

use super::service::Service;
use crate::error::ConfigError;

/// Each service's dependencies and dependents, as indices into the runner's services.
pub(crate) struct Graph {
    /// A start order in which every service comes after its dependencies.
    pub(crate) order: Vec<usize>,
    pub(crate) deps: Vec<Vec<usize>>,
    pub(crate) dependents: Vec<Vec<usize>>,
}

/// Checks names, dependencies and settings. Returns the graph when some service has
/// dependencies, `None` when none has (they start in the order given).
pub(crate) fn validate(services: &[Service]) -> Result<Option<Graph>, ConfigError> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(services.len());
    let mut any_deps = false;
    for (i, s) in services.iter().enumerate() {
        if s.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if index.insert(&s.name, i).is_some() {
            return Err(ConfigError::DuplicateName(s.name.clone()));
        }
        s.config().validate(&s.name, s.has_context)?;
        if s.dependencies().contains(&s.name) {
            // A cycle of one service.
            return Err(ConfigError::Cycle(vec![s.name.clone(), s.name.clone()]));
        }
        any_deps |= !s.dependencies().is_empty();
    }
    if !any_deps {
        return Ok(None);
    }
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (s, deps) in services.iter().zip(&mut deps) {
        for d in s.dependencies() {
            let Some(&j) = index.get(d.as_str()) else {
                return Err(ConfigError::UnknownDependency {
                    service: s.name.clone(),
                    dependency: d.clone(),
                });
            };
            if !deps.contains(&j) {
                deps.push(j);
            }
        }
    }
    let order = topological_order(services, &deps)?;
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, deps) in deps.iter().enumerate() {
        for &j in deps {
            dependents[j].push(i);
        }
    }
    Ok(Some(Graph {
        order,
        deps,
        dependents,
    }))
}

/// A depth-first topological sort; a grey node met again closes a cycle, which is
/// returned named along its path.
fn topological_order(services: &[Service], deps: &[Vec<usize>]) -> Result<Vec<usize>, ConfigError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        White,
        Grey,
        Black,
    }
    let mut mark = vec![Mark::White; services.len()];
    let mut order = Vec::with_capacity(services.len());
    // (node, next dependency to visit); the nodes on the stack are the current path.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..services.len() {
        if mark[root] != Mark::White {
            continue;
        }
        mark[root] = Mark::Grey;
        stack.push((root, 0));
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let after = &deps[node];
            if *next < after.len() {
                let dep = after[*next];
                *next += 1;
                match mark[dep] {
                    Mark::White => {
                        mark[dep] = Mark::Grey;
                        stack.push((dep, 0));
                    }
                    Mark::Grey => {
                        let start = stack.iter().position(|&(p, _)| p == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|&(p, _)| services[p].name.clone())
                            .collect();
                        cycle.push(services[dep].name.clone());
                        return Err(ConfigError::Cycle(cycle));
                    }
                    Mark::Black => {}
                }
            } else {
                mark[node] = Mark::Black;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Random names from a two-letter alphabet, 1 to 19 bytes long, so that
    /// duplicates and shared prefixes are common.
    fn names(rng: &mut fastrand::Rng, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let len = rng.usize(1..20);
                (0..len)
                    .map(|_| if rng.bool() { 'a' } else { 'b' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_graph_agrees_with_a_reference_model() {
        let mut rng = fastrand::Rng::with_seed(3);
        let (mut duplicates, mut resolved, mut unknowns) = (0, 0, 0);
        for _ in 0..500 {
            let n = rng.usize(1..60);
            let names = names(&mut rng, n);
            let mut seen = HashSet::new();
            let first_duplicate = names.iter().find(|n| !seen.insert(n.as_str()));
            // Each service depends on up to two earlier ones (no cycle), and sometimes
            // on a name that is not a service.
            let mut expected_deps = Vec::new();
            let mut unknown = None;
            let services: Vec<Service> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut after: Vec<String> = Vec::new();
                    let mut deps = Vec::new();
                    for _ in 0..rng.usize(0..3).min(i) {
                        let j = rng.usize(0..i);
                        after.push(names[j].clone());
                        // A name resolves to its first service.
                        let first = names.iter().position(|n| *n == names[j]).unwrap();
                        if !deps.contains(&first) {
                            deps.push(first);
                        }
                    }
                    if unknown.is_none() && rng.usize(0..200) == 0 {
                        after.push("c".into());
                        unknown = Some((name.clone(), "c".to_owned()));
                    }
                    expected_deps.push(deps);
                    Service::without_context(name.clone(), || async {}).after(after)
                })
                .collect();
            match (validate(&services), first_duplicate) {
                (Err(ConfigError::DuplicateName(d)), Some(expected)) => {
                    assert_eq!(&d, expected);
                    duplicates += 1;
                }
                (
                    Err(ConfigError::UnknownDependency {
                        service,
                        dependency,
                    }),
                    None,
                ) => {
                    assert_eq!(Some((service, dependency)), unknown);
                    unknowns += 1;
                }
                (Ok(None), None) => assert!(expected_deps.iter().all(Vec::is_empty)),
                (
                    Ok(Some(Graph {
                        order,
                        deps: deps_of,
                        dependents,
                    })),
                    None,
                ) => {
                    assert_eq!(unknown, None);
                    for (j, of_j) in dependents.iter().enumerate() {
                        for &i in of_j {
                            assert!(deps_of[i].contains(&j));
                        }
                    }
                    assert_eq!(deps_of, expected_deps);
                    let position: HashMap<usize, usize> =
                        order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
                    for (i, deps) in deps_of.iter().enumerate() {
                        assert!(deps.iter().all(|d| position[d] < position[&i]));
                    }
                    resolved += 1;
                }
                (Ok(_), expected) => panic!("resolved, expected duplicate {expected:?}"),
                (Err(other), expected) => panic!("{other:?}, expected duplicate {expected:?}"),
            }
        }
        // Every kind of outcome was exercised.
        assert!(
            duplicates > 50 && resolved > 50 && unknowns > 5,
            "{duplicates} {resolved} {unknowns}"
        );
    }
}
