//! Parsing of `#[service(...)]` and `#[main(...)]` arguments into typed settings.
//! Every error points at the offending tokens.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, MetaNameValue, Token};

/// Collects errors so that one expansion reports all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// An error underlining all of `tokens`.
    pub(crate) fn add(&mut self, tokens: impl quote::ToTokens, msg: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    pub(crate) fn into_result(self) -> Result<(), syn::Error> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A duration written `"250ms"`, `"5s"`, `"2m"` or `"1h"`, kept as nanoseconds.
pub(crate) fn parse_duration(lit: &LitStr) -> Result<u128, syn::Error> {
    let text = lit.value();
    let err = || {
        syn::Error::new(
            lit.span(),
            format!(
                "invalid duration `{text}`: expected a whole number followed by `ms`, `s`, `m` or `h`, like \"250ms\" or \"5s\""
            ),
        )
    };
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(err());
    }
    let n: u128 = t[..digits].parse().map_err(|_| err())?;
    let unit: u128 = match &t[digits..] {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(err()),
    };
    let nanos = n.checked_mul(unit).ok_or_else(err)?;
    if nanos > u64::MAX as u128 {
        return Err(syn::Error::new(
            lit.span(),
            format!("duration `{text}` is too long"),
        ));
    }
    Ok(nanos)
}

fn str_value(nv: &MetaNameValue) -> Result<LitStr, syn::Error> {
    match &nv.value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{}` expects a string literal", key_name(nv)),
        )),
    }
}

fn key_name(nv: &MetaNameValue) -> String {
    path_name(&nv.path)
}

/// The `key = value` arguments; a bare `key` or a `key(...)` is reported at its
/// own tokens (not as a parse error spanning the whole attribute).
fn parse_args(
    args: TokenStream,
    attr: &str,
    errors: &mut Errors,
) -> Result<Vec<MetaNameValue>, syn::Error> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    let mut out = Vec::new();
    for meta in metas {
        match meta {
            Meta::NameValue(nv) => out.push(nv),
            Meta::Path(p) => {
                let key = path_name(&p);
                errors.add(
                    &p,
                    format!("`{attr}` argument `{key}` needs a value: write `{key} = ...`"),
                );
            }
            Meta::List(l) => {
                let key = path_name(&l.path);
                errors.add(
                    &l,
                    format!(
                        "`{attr}` argument `{key}` is written `{key} = ...`, not with parentheses"
                    ),
                );
            }
        }
    }
    Ok(out)
}

fn path_name(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// The path in a `crate = "..."` argument.
fn crate_path(nv: &MetaNameValue) -> Result<syn::Path, syn::Error> {
    let s = str_value(nv)?;
    s.parse().map_err(|_| {
        syn::Error::new(
            s.span(),
            format!(
                "`crate` expects the path to servicekit, like \"::servicekit\" or \"my_crate::servicekit\"; `{}` is not a path",
                s.value()
            ),
        )
    })
}

/// Checks a key against the allowed list, reporting unknown and repeated keys.
fn check_key(
    nv: &MetaNameValue,
    allowed: &[&str],
    seen: &mut Vec<String>,
    attr: &str,
    errors: &mut Errors,
) -> Option<String> {
    let key = key_name(nv);
    if !allowed.contains(&key.as_str()) {
        let list = allowed
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        errors.add(
            &nv.path,
            format!("unknown `{attr}` argument `{key}`; expected one of {list}"),
        );
        return None;
    }
    if seen.contains(&key) {
        errors.add(&nv.path, format!("`{key}` set multiple times"));
        return None;
    }
    seen.push(key.clone());
    Some(key)
}

/// A duration setting with the span of its literal.
#[derive(Clone, Copy)]
pub(crate) struct Dur {
    pub(crate) nanos: u128,
    pub(crate) span: Span,
}

#[derive(Default)]
pub(crate) struct ServiceArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) restart: Option<(String, Span)>,
    pub(crate) every: Option<Dur>,
    pub(crate) backoff: Option<(Dur, Dur)>,
    pub(crate) reset_after: Option<Dur>,
    pub(crate) max_restarts: Option<(u32, Span)>,
    pub(crate) within: Option<Dur>,
    pub(crate) on_give_up: Option<(String, Span)>,
    pub(crate) shutdown_timeout: Option<Dur>,
    pub(crate) after: Vec<LitStr>,
    pub(crate) krate: Option<syn::Path>,
}

const SERVICE_KEYS: &[&str] = &[
    "name",
    "restart",
    "every",
    "backoff",
    "reset_after",
    "max_restarts",
    "within",
    "on_give_up",
    "shutdown_timeout",
    "after",
    "crate",
];

pub(crate) fn parse_service_args(args: TokenStream, errors: &mut Errors) -> ServiceArgs {
    let mut out = ServiceArgs::default();
    let list = match parse_args(args, "#[service]", errors) {
        Ok(l) => l,
        Err(e) => {
            errors.push(e);
            return out;
        }
    };
    let mut seen = Vec::new();
    for nv in &list {
        let Some(key) = check_key(nv, SERVICE_KEYS, &mut seen, "#[service]", errors) else {
            continue;
        };
        let r = (|| -> Result<(), syn::Error> {
            match key.as_str() {
                "after" => {
                    let Expr::Array(arr) = &nv.value else {
                        return Err(syn::Error::new_spanned(
                            &nv.value,
                            "`after` expects a list of service names, like `after = [\"db\"]`",
                        ));
                    };
                    for el in &arr.elems {
                        match el {
                            Expr::Lit(ExprLit {
                                lit: Lit::Str(s), ..
                            }) if !s.value().is_empty() => out.after.push(s.clone()),
                            other => {
                                return Err(syn::Error::new_spanned(
                                    other,
                                    "`after` expects non-empty string literals (service names)",
                                ));
                            }
                        }
                    }
                }
                "max_restarts" => match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => {
                        let n = i.base10_parse::<u32>().map_err(|_| {
                            syn::Error::new(
                                i.span(),
                                format!(
                                    "`max_restarts` must be a whole number from 0 to {}; `{i}` is not",
                                    u32::MAX
                                ),
                            )
                        })?;
                        out.max_restarts = Some((n, i.span()));
                    }
                    Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => {
                        return Err(syn::Error::new_spanned(
                            u,
                            "`max_restarts` cannot be negative: it is how many restarts are allowed within `within`, 0 or more",
                        ));
                    }
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`max_restarts` expects a whole number, like `max_restarts = 5`",
                        ));
                    }
                },
                _ => {
                    let s = str_value(nv)?;
                    let dur = |s: &LitStr| -> Result<Dur, syn::Error> {
                        Ok(Dur {
                            nanos: parse_duration(s)?,
                            span: s.span(),
                        })
                    };
                    match key.as_str() {
                        "name" => {
                            if s.value().is_empty() {
                                return Err(syn::Error::new(s.span(), "`name` must not be empty"));
                            }
                            out.name = Some(s);
                        }
                        "restart" => {
                            let v = s.value();
                            if !matches!(v.as_str(), "always" | "on-failure" | "never") {
                                return Err(syn::Error::new(
                                    s.span(),
                                    format!(
                                        "invalid `restart` value `{v}`; expected \"always\", \"on-failure\" or \"never\""
                                    ),
                                ));
                            }
                            out.restart = Some((v, s.span()));
                        }
                        "on_give_up" => {
                            let v = s.value();
                            if !matches!(v.as_str(), "shutdown" | "ignore") {
                                return Err(syn::Error::new(
                                    s.span(),
                                    format!(
                                        "invalid `on_give_up` value `{v}`; expected \"shutdown\" or \"ignore\""
                                    ),
                                ));
                            }
                            out.on_give_up = Some((v, s.span()));
                        }
                        "every" => {
                            let d = dur(&s)?;
                            if d.nanos == 0 {
                                return Err(syn::Error::new(
                                    s.span(),
                                    "`every` must be greater than zero",
                                ));
                            }
                            out.every = Some(d);
                        }
                        "within" => {
                            let d = dur(&s)?;
                            if d.nanos == 0 {
                                return Err(syn::Error::new(
                                    s.span(),
                                    "`within` must be greater than zero",
                                ));
                            }
                            out.within = Some(d);
                        }
                        "reset_after" => out.reset_after = Some(dur(&s)?),
                        "shutdown_timeout" => out.shutdown_timeout = Some(dur(&s)?),
                        "backoff" => {
                            let v = s.value();
                            let parts = v
                                .split_once("..")
                                .filter(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty());
                            let Some((a, b)) = parts else {
                                return Err(syn::Error::new(
                                    s.span(),
                                    format!(
                                        "invalid `backoff` value `{v}`; expected \"base..cap\" with both durations, like \"100ms..10s\""
                                    ),
                                ));
                            };
                            let base = dur(&LitStr::new(a, s.span()))?;
                            let cap = dur(&LitStr::new(b, s.span()))?;
                            if base.nanos > cap.nanos {
                                return Err(syn::Error::new(
                                    s.span(),
                                    format!("`backoff` base `{a}` is greater than its cap `{b}`"),
                                ));
                            }
                            out.backoff = Some((base, cap));
                        }
                        "crate" => out.krate = Some(crate_path(nv)?),
                        _ => unreachable!("key checked against SERVICE_KEYS"),
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            errors.push(e);
        }
    }
    out
}

pub(crate) struct MainArgs {
    pub(crate) multi_thread: bool,
    pub(crate) worker_threads: Option<usize>,
    pub(crate) tracing: bool,
    pub(crate) runtime_shutdown: u128,
    pub(crate) krate: Option<syn::Path>,
}

const MAIN_KEYS: &[&str] = &[
    "flavor",
    "worker_threads",
    "tracing",
    "runtime_shutdown",
    "crate",
];

pub(crate) fn parse_main_args(args: TokenStream, errors: &mut Errors) -> MainArgs {
    let mut out = MainArgs {
        multi_thread: true,
        worker_threads: None,
        tracing: true,
        runtime_shutdown: 1_000_000_000,
        krate: None,
    };
    let list = match parse_args(args, "#[servicekit::main]", errors) {
        Ok(l) => l,
        Err(e) => {
            errors.push(e);
            return out;
        }
    };
    let mut seen = Vec::new();
    let mut worker_span = None;
    for nv in &list {
        let Some(key) = check_key(nv, MAIN_KEYS, &mut seen, "#[servicekit::main]", errors) else {
            continue;
        };
        let r = (|| -> Result<(), syn::Error> {
            match key.as_str() {
                "flavor" => {
                    let s = str_value(nv)?;
                    out.multi_thread = match s.value().as_str() {
                        "multi_thread" => true,
                        "current_thread" => false,
                        v => {
                            return Err(syn::Error::new(
                                s.span(),
                                format!(
                                    "invalid `flavor` value `{v}`; expected \"multi_thread\" or \"current_thread\""
                                ),
                            ));
                        }
                    };
                }
                "worker_threads" => match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => {
                        let n = i.base10_parse::<usize>()?;
                        if n == 0 {
                            return Err(syn::Error::new(
                                i.span(),
                                "`worker_threads` must be at least 1",
                            ));
                        }
                        out.worker_threads = Some(n);
                        worker_span = Some(syn::spanned::Spanned::span(&nv.path));
                    }
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`worker_threads` expects a whole number",
                        ));
                    }
                },
                "tracing" => match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => out.tracing = b.value,
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`tracing` expects `true` or `false`",
                        ));
                    }
                },
                "runtime_shutdown" => out.runtime_shutdown = parse_duration(&str_value(nv)?)?,
                "crate" => out.krate = Some(crate_path(nv)?),
                _ => unreachable!("key checked against MAIN_KEYS"),
            }
            Ok(())
        })();
        if let Err(e) = r {
            errors.push(e);
        }
    }
    if let (Some(span), false) = (worker_span, out.multi_thread) {
        errors.push(syn::Error::new(
            span,
            "`worker_threads` can only be set with the \"multi_thread\" flavor",
        ));
    }
    out
}
