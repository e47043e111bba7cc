//! The arguments of `#[service(...)]` and `#[main(...)]`, parsed into typed settings.
//!
//! Keys are keywords (`syn::custom_keyword!`), each attribute's keys an enum, and
//! every value is turned into its type (an enum, a duration, a number, a path) while
//! it is parsed, so the code generator never looks at a string again. Every error
//! points at the offending tokens, and one attribute reports all of its errors at
//! once: after a bad argument the parser skips to the next `,`.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Token};

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

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(restart);
    syn::custom_keyword!(every);
    syn::custom_keyword!(backoff);
    syn::custom_keyword!(reset_after);
    syn::custom_keyword!(max_restarts);
    syn::custom_keyword!(within);
    syn::custom_keyword!(on_give_up);
    syn::custom_keyword!(shutdown_timeout);
    syn::custom_keyword!(reload);
    syn::custom_keyword!(watchdog);
    syn::custom_keyword!(group);
    syn::custom_keyword!(after);
    syn::custom_keyword!(flavor);
    syn::custom_keyword!(worker_threads);
    syn::custom_keyword!(tracing);
    syn::custom_keyword!(runtime_shutdown);
    syn::custom_keyword!(systemd);
    syn::custom_keyword!(http);
}

/// The keys of one attribute: an enum with one variant per keyword, plus `Crate`
/// (`crate` is a Rust keyword, not a custom one).
trait Key: Copy + PartialEq + Sized + 'static {
    /// Every key with its spelling, in the order the "expected one of" list shows.
    const ALL: &'static [(Self, &'static str)];

    /// Parses the next key if it is one of this attribute's.
    fn parse_known(input: ParseStream<'_>) -> syn::Result<Option<(Self, Span)>>;

    fn spelling(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("?", |(_, s)| s)
    }
}

/// Declares an attribute's key enum and its keyword parser.
macro_rules! keys {
    ($(#[$doc:meta])* $enum:ident { $($variant:ident => $kw:ident,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum $enum {
            $($variant,)*
            Crate,
        }

        impl Key for $enum {
            const ALL: &'static [(Self, &'static str)] =
                &[$((Self::$variant, stringify!($kw)),)* (Self::Crate, "crate")];

            fn parse_known(input: ParseStream<'_>) -> syn::Result<Option<(Self, Span)>> {
                $(
                    if input.peek(kw::$kw) {
                        let k: kw::$kw = input.parse()?;
                        return Ok(Some((Self::$variant, k.span)));
                    }
                )*
                if input.peek(Token![crate]) {
                    let k: Token![crate] = input.parse()?;
                    return Ok(Some((Self::Crate, k.span)));
                }
                Ok(None)
            }
        }
    };
}

keys! {
    /// A key of `#[service(...)]`.
    ServiceKey {
        Name => name,
        Restart => restart,
        Every => every,
        Backoff => backoff,
        ResetAfter => reset_after,
        MaxRestarts => max_restarts,
        Within => within,
        OnGiveUp => on_give_up,
        ShutdownTimeout => shutdown_timeout,
        Reload => reload,
        Watchdog => watchdog,
        Group => group,
        After => after,
    }
}

keys! {
    /// A key of `#[servicekit::main(...)]`.
    MainKey {
        Flavor => flavor,
        WorkerThreads => worker_threads,
        Tracing => tracing,
        RuntimeShutdown => runtime_shutdown,
        Systemd => systemd,
        Http => http,
    }
}

/// Parses `key = value, ...`, calling `set` for each pair whose key is known and not
/// repeated; collects every error (also those `set` returns) into `errors`.
fn parse_pairs<K: Key>(
    tokens: TokenStream,
    attr: &str,
    errors: &mut Errors,
    mut set: impl FnMut(K, Span, &Expr) -> syn::Result<()>,
) {
    let parser = |input: ParseStream<'_>| {
        let mut seen: Vec<K> = Vec::new();
        while !input.is_empty() {
            if let Err(e) = parse_pair(input, attr, &mut seen, &mut set) {
                errors.push(e);
                // Skip the rest of this argument.
                while !input.is_empty() && !input.peek(Token![,]) {
                    input.parse::<TokenTree>()?;
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(())
    };
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
}

fn parse_pair<K: Key>(
    input: ParseStream<'_>,
    attr: &str,
    seen: &mut Vec<K>,
    set: &mut impl FnMut(K, Span, &Expr) -> syn::Result<()>,
) -> syn::Result<()> {
    let known = K::parse_known(input)?;
    let (key, span, spelling) = match known {
        Some((k, span)) => (Some(k), span, k.spelling().to_owned()),
        None => {
            let ident = Ident::parse_any(input)
                .map_err(|e| syn::Error::new(e.span(), format!("expected a `{attr}` argument")))?;
            (None, ident.span(), ident.to_string())
        }
    };
    if input.peek(syn::token::Paren) {
        let group: TokenTree = input.parse()?;
        // Underline the key and its parentheses.
        let written: TokenStream = [TokenTree::Ident(Ident::new("key", span)), group]
            .into_iter()
            .collect();
        return Err(syn::Error::new_spanned(
            written,
            format!(
                "`{attr}` argument `{spelling}` is written `{spelling} = ...`, not with parentheses"
            ),
        ));
    }
    if !input.peek(Token![=]) {
        return Err(syn::Error::new(
            span,
            format!("`{attr}` argument `{spelling}` needs a value: write `{spelling} = ...`"),
        ));
    }
    input.parse::<Token![=]>()?;
    let value: Expr = input.parse()?;
    let Some(key) = key else {
        let list = K::ALL
            .iter()
            .map(|(_, s)| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(syn::Error::new(
            span,
            format!("unknown `{attr}` argument `{spelling}`; expected one of {list}"),
        ));
    };
    if seen.contains(&key) {
        return Err(syn::Error::new(
            span,
            format!("`{spelling}` set multiple times"),
        ));
    }
    seen.push(key);
    set(key, span, &value)
}

/// A duration with the span of its literal.
#[derive(Clone, Copy)]
pub(crate) struct Dur {
    pub(crate) nanos: u64,
    pub(crate) span: Span,
}

/// A value with the span it was written at.
#[derive(Clone, Copy)]
pub(crate) struct At<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// `restart = "..."`.
#[derive(Clone, Copy)]
pub(crate) enum Restart {
    Always,
    OnFailure,
    Never,
}

/// `on_give_up = "..."`.
#[derive(Clone, Copy)]
pub(crate) enum GiveUp {
    Shutdown,
    Ignore,
}

/// `reload = "..."`.
#[derive(Clone, Copy)]
pub(crate) enum Reload {
    Restart,
    Hook,
}

/// `flavor = "..."`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    MultiThread,
    CurrentThread,
}

fn lit_str(key: &str, value: &Expr) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{key}` expects a string literal"),
        )),
    }
}

/// One of a fixed set of string values.
fn one_of<T: Copy>(key: &str, value: &Expr, choices: &[(&str, T)]) -> syn::Result<At<T>> {
    let s = lit_str(key, value)?;
    let v = s.value();
    if let Some((_, t)) = choices.iter().find(|(name, _)| *name == v) {
        return Ok(At {
            value: *t,
            span: s.span(),
        });
    }
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(syn::Error::new(
        s.span(),
        format!("invalid `{key}` value `{v}`; expected {expected}"),
    ))
}

/// A duration written `"250ms"`, `"5s"`, `"2m"` or `"1h"`.
fn parse_duration(lit: &LitStr) -> syn::Result<Dur> {
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
    let nanos = u64::try_from(nanos)
        .map_err(|_| syn::Error::new(lit.span(), format!("duration `{text}` is too long")))?;
    Ok(Dur {
        nanos,
        span: lit.span(),
    })
}

fn duration(key: &str, value: &Expr) -> syn::Result<Dur> {
    let Expr::Lit(ExprLit {
        lit: Lit::Str(s), ..
    }) = value
    else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` expects a duration in a string, like `{key} = \"5s\"`"),
        ));
    };
    parse_duration(s)
}

fn nonzero_duration(key: &str, value: &Expr) -> syn::Result<Dur> {
    let d = duration(key, value)?;
    if d.nanos == 0 {
        return Err(syn::Error::new(
            d.span,
            format!("`{key}` must be greater than zero"),
        ));
    }
    Ok(d)
}

/// `"base..cap"`.
fn backoff(value: &Expr) -> syn::Result<(Dur, Dur)> {
    let s = lit_str("backoff", value)?;
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
    let base = parse_duration(&LitStr::new(a, s.span()))?;
    let cap = parse_duration(&LitStr::new(b, s.span()))?;
    if base.nanos > cap.nanos {
        return Err(syn::Error::new(
            s.span(),
            format!("`backoff` base `{a}` is greater than its cap `{b}`"),
        ));
    }
    Ok((base, cap))
}

/// `after = ["name", ...]`.
fn after(value: &Expr) -> syn::Result<Vec<LitStr>> {
    let Expr::Array(arr) = value else {
        return Err(syn::Error::new_spanned(
            value,
            "`after` expects a list of service names, like `after = [\"db\"]`",
        ));
    };
    arr.elems
        .iter()
        .map(|el| match el {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) if !s.value().is_empty() => Ok(s.clone()),
            other => Err(syn::Error::new_spanned(
                other,
                "`after` expects non-empty string literals (service names)",
            )),
        })
        .collect()
}

fn max_restarts(value: &Expr) -> syn::Result<u32> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<u32>().map_err(|_| {
            syn::Error::new(
                i.span(),
                format!(
                    "`max_restarts` must be a whole number from 0 to {}; `{i}` is not",
                    u32::MAX
                ),
            )
        }),
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => Err(syn::Error::new_spanned(
            u,
            "`max_restarts` cannot be negative: it is how many restarts are allowed within `within`, 0 or more",
        )),
        other => Err(syn::Error::new_spanned(
            other,
            "`max_restarts` expects a whole number, like `max_restarts = 5`",
        )),
    }
}

/// The path in a `crate = "..."` argument.
fn crate_path(value: &Expr) -> syn::Result<syn::Path> {
    let s = lit_str("crate", value)?;
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

/// The settings of `#[service(...)]`; `None` where the user wrote nothing.
#[derive(Default)]
pub(crate) struct ServiceArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) restart: Option<At<Restart>>,
    pub(crate) every: Option<Dur>,
    pub(crate) backoff: Option<(Dur, Dur)>,
    pub(crate) reset_after: Option<Dur>,
    pub(crate) max_restarts: Option<u32>,
    pub(crate) within: Option<Dur>,
    pub(crate) on_give_up: Option<At<GiveUp>>,
    pub(crate) shutdown_timeout: Option<Dur>,
    pub(crate) reload: Option<At<Reload>>,
    pub(crate) watchdog: Option<Dur>,
    pub(crate) group: Option<LitStr>,
    pub(crate) after: Vec<LitStr>,
    pub(crate) krate: Option<syn::Path>,
}

impl ServiceArgs {
    /// Parses the arguments; what is valid is kept, every error goes to `errors`.
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Self {
        let mut out = ServiceArgs::default();
        parse_pairs(tokens, "#[service]", errors, |key, _, v| {
            match key {
                ServiceKey::Name => {
                    let s = lit_str("name", v)?;
                    if s.value().is_empty() {
                        return Err(syn::Error::new(s.span(), "`name` must not be empty"));
                    }
                    out.name = Some(s);
                }
                ServiceKey::Restart => {
                    out.restart = Some(one_of(
                        "restart",
                        v,
                        &[
                            ("always", Restart::Always),
                            ("on-failure", Restart::OnFailure),
                            ("never", Restart::Never),
                        ],
                    )?);
                }
                ServiceKey::Every => out.every = Some(nonzero_duration("every", v)?),
                ServiceKey::Backoff => out.backoff = Some(backoff(v)?),
                ServiceKey::ResetAfter => out.reset_after = Some(duration("reset_after", v)?),
                ServiceKey::MaxRestarts => out.max_restarts = Some(max_restarts(v)?),
                ServiceKey::Within => out.within = Some(nonzero_duration("within", v)?),
                ServiceKey::OnGiveUp => {
                    out.on_give_up = Some(one_of(
                        "on_give_up",
                        v,
                        &[("shutdown", GiveUp::Shutdown), ("ignore", GiveUp::Ignore)],
                    )?);
                }
                ServiceKey::ShutdownTimeout => {
                    out.shutdown_timeout = Some(duration("shutdown_timeout", v)?);
                }
                ServiceKey::Reload => {
                    out.reload = Some(one_of(
                        "reload",
                        v,
                        &[("restart", Reload::Restart), ("hook", Reload::Hook)],
                    )?);
                }
                ServiceKey::Watchdog => out.watchdog = Some(nonzero_duration("watchdog", v)?),
                ServiceKey::Group => {
                    let s = lit_str("group", v)?;
                    if s.value().is_empty() {
                        return Err(syn::Error::new(s.span(), "`group` must not be empty"));
                    }
                    out.group = Some(s);
                }
                ServiceKey::After => out.after = after(v)?,
                ServiceKey::Crate => out.krate = Some(crate_path(v)?),
            }
            Ok(())
        });
        out
    }
}

/// The settings of `#[servicekit::main(...)]`, defaults filled in.
pub(crate) struct MainArgs {
    pub(crate) flavor: Flavor,
    pub(crate) worker_threads: Option<usize>,
    /// `tracing = ...` as written; `None` means the default (a subscriber if the
    /// `tracing-subscriber` feature is on).
    pub(crate) tracing: Option<At<bool>>,
    /// `systemd = false` turns the notify protocol off.
    pub(crate) systemd: bool,
    /// `http = "addr"`: serve health, status and metrics there.
    pub(crate) http: Option<LitStr>,
    pub(crate) runtime_shutdown: Dur,
    pub(crate) krate: Option<syn::Path>,
}

impl MainArgs {
    /// Parses the arguments; what is valid is kept, every error goes to `errors`.
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Self {
        let mut out = MainArgs {
            flavor: Flavor::MultiThread,
            worker_threads: None,
            tracing: None,
            systemd: true,
            http: None,
            runtime_shutdown: Dur {
                nanos: 1_000_000_000,
                span: Span::call_site(),
            },
            krate: None,
        };
        let mut worker_key = None;
        parse_pairs(tokens, "#[servicekit::main]", errors, |key, key_span, v| {
            match key {
                MainKey::Flavor => {
                    out.flavor = one_of(
                        "flavor",
                        v,
                        &[
                            ("multi_thread", Flavor::MultiThread),
                            ("current_thread", Flavor::CurrentThread),
                        ],
                    )?
                    .value;
                }
                MainKey::WorkerThreads => {
                    let Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) = v
                    else {
                        return Err(syn::Error::new_spanned(
                            v,
                            "`worker_threads` expects a whole number",
                        ));
                    };
                    let n = i.base10_parse::<usize>()?;
                    if n == 0 {
                        return Err(syn::Error::new(
                            i.span(),
                            "`worker_threads` must be at least 1",
                        ));
                    }
                    out.worker_threads = Some(n);
                    worker_key = Some(key_span);
                }
                MainKey::Tracing => match v {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => {
                        out.tracing = Some(At {
                            value: b.value,
                            span: b.span(),
                        });
                    }
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`tracing` expects `true` or `false`",
                        ));
                    }
                },
                MainKey::Http => {
                    let addr = lit_str("http", v)?;
                    if addr.value().is_empty() {
                        return Err(syn::Error::new(
                            addr.span(),
                            "`http` must be an address such as \"127.0.0.1:9090\"",
                        ));
                    }
                    out.http = Some(addr);
                }
                MainKey::Systemd => match v {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => out.systemd = b.value,
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`systemd` expects `true` or `false`",
                        ));
                    }
                },
                MainKey::RuntimeShutdown => {
                    out.runtime_shutdown = duration("runtime_shutdown", v)?;
                }
                MainKey::Crate => out.krate = Some(crate_path(v)?),
            }
            Ok(())
        });
        if let (Some(span), Flavor::CurrentThread) = (worker_key, out.flavor) {
            errors.push(syn::Error::new(
                span,
                "`worker_threads` can only be set with the \"multi_thread\" flavor",
            ));
        }
        out
    }
}
