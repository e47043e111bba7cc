//! Checks of the annotated function's signature, by its syntax, each error at the
//! offending tokens. What only the type checker can tell (an argument that is not
//! `Clone`, an error type that is not `Into<BoxError>`, an alias to a bad return type)
//! is left to the generated code, which makes those fail at the user's tokens too.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Attribute, FnArg, Ident, Pat, ReturnType, Signature, Type};

use crate::args::Errors;

/// A parameter of a `#[service]` fn.
pub(crate) enum Param<'a> {
    /// The `ServiceContext` (of this type, as written), injected by the runner for
    /// each run.
    Context(&'a Type),
    /// An argument of the generated fn, kept and cloned for each run.
    Arg {
        ident: Ident,
        ty: &'a Type,
        attrs: &'a [Attribute],
    },
}

/// Whether a parameter is marked `#[context]`: the context behind a type alias,
/// which the macro cannot see through.
pub(crate) fn is_context_marker(attr: &Attribute) -> bool {
    attr.path().is_ident("context")
}

/// Whether a type names `ServiceContext` (or a reference to it).
fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "ServiceContext"),
        Type::Reference(r) => is_context(&r.elem),
        _ => false,
    }
}

/// The first lifetime other than `'static` inside a type (`&str`, `Cow<'a, str>`).
fn borrowed_lifetime(ty: &Type) -> Option<TokenStream> {
    if let Type::Reference(r) = ty {
        return match &r.lifetime {
            Some(l) if l.ident == "static" => borrowed_lifetime(&r.elem),
            _ => Some(quote!(#r)),
        };
    }
    fn walk(tokens: TokenStream) -> Option<TokenStream> {
        let mut iter = tokens.into_iter().peekable();
        while let Some(t) = iter.next() {
            match t {
                proc_macro2::TokenTree::Punct(p) if p.as_char() == '\'' => {
                    if let Some(proc_macro2::TokenTree::Ident(id)) = iter.peek()
                        && id != "static"
                    {
                        let id = id.clone();
                        return Some(quote!(#p #id));
                    }
                }
                proc_macro2::TokenTree::Group(g) => {
                    if let Some(found) = walk(g.stream()) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        None
    }
    walk(quote!(#ty))
}

/// A return type that can never be a service's (or `main`'s) output, told apart by
/// its syntax: `Result<T, _>` with `T` not `()`, a primitive, a reference, a tuple
/// that is not `()`. Anything else is left to the type checker (an alias may be fine).
fn bad_output(ty: &Type) -> Option<(TokenStream, String)> {
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => None,
        Type::Tuple(t) => Some((quote!(#t), "a tuple".into())),
        Type::Reference(r) => Some((quote!(#r), "a reference".into())),
        Type::Path(p) => {
            let last = p.path.segments.last()?;
            let name = last.ident.to_string();
            const PRIMITIVES: &[&str] = &[
                "bool", "char", "str", "String", "u8", "u16", "u32", "u64", "u128", "usize", "i8",
                "i16", "i32", "i64", "i128", "isize", "f32", "f64",
            ];
            if p.qself.is_none()
                && p.path.segments.len() == 1
                && PRIMITIVES.contains(&name.as_str())
            {
                return Some((quote!(#ty), format!("`{name}`")));
            }
            if name != "Result" {
                return None;
            }
            let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            match args.args.first()? {
                syn::GenericArgument::Type(Type::Tuple(t)) if t.elems.is_empty() => None,
                syn::GenericArgument::Type(ok) => Some((
                    quote!(#ok),
                    "a `Result` whose success value is not `()`".into(),
                )),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Checks a `#[service]` fn's signature and sorts its parameters.
pub(crate) fn service<'a>(sig: &'a Signature, errors: &mut Errors) -> Vec<Param<'a>> {
    if sig.asyncness.is_none() {
        errors.add(sig.fn_token, "`#[service]` requires an `async fn`");
    }
    if let Some(c) = &sig.constness {
        errors.add(c, "`#[service]` cannot be used on a `const fn`");
    }
    if let Some(v) = &sig.variadic {
        errors.add(v, "`#[service]` functions cannot be variadic");
    }
    if let Some(u) = &sig.unsafety {
        errors.add(
            u,
            "`#[service]` cannot be used on an `unsafe fn`: the runner calls it for every run, with no one to uphold its safety conditions",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.add(abi, "`#[service]` functions cannot have an `extern` ABI");
    }
    for lt in sig.generics.lifetimes() {
        errors.add(
            lt,
            "`#[service]` functions cannot have lifetime parameters: their arguments are kept for every run, so they must be owned (`'static`)",
        );
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && let Some((tokens, what)) = bad_output(ty)
    {
        errors.add(
            tokens,
            format!("a service returns `()` or `Result<(), E>`, not {what}"),
        );
    }

    let mut params = Vec::new();
    let mut has_context = false;
    for (i, arg) in sig.inputs.iter().enumerate() {
        let pt = match arg {
            FnArg::Receiver(r) => {
                errors.add(
                    r,
                    "`#[service]` cannot be used on methods: a service is a free `async fn` (remove the `self` parameter)",
                );
                continue;
            }
            FnArg::Typed(pt) => pt,
        };
        if pt.attrs.iter().any(is_context_marker) || is_context(&pt.ty) {
            if has_context {
                errors.add(
                    pt,
                    "only one `ServiceContext` parameter is allowed; the runner injects a single context per run",
                );
            }
            if matches!(&*pt.ty, Type::Reference(_)) {
                errors.add(
                    &pt.ty,
                    "take the context by value: `ctx: ServiceContext` (it is cheap to clone)",
                );
            }
            has_context = true;
            params.push(Param::Context(&pt.ty));
            continue;
        }
        if let Type::ImplTrait(t) = &*pt.ty {
            errors.add(
                t,
                "`impl Trait` arguments are not supported by `#[service]`; use a generic parameter",
            );
        } else if let Some(borrow) = borrowed_lifetime(&pt.ty) {
            errors.add(
                borrow,
                "`#[service]` arguments are kept and cloned for every run, so they must be owned: take a `String` instead of a `&str`, an owned value or an `Arc` instead of a reference",
            );
        }
        // A pattern parameter (`(a, b): (u8, u8)`) is passed on under a made-up name.
        let ident = match &*pt.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            _ => format_ident!("__servicekit_arg{}", i),
        };
        params.push(Param::Arg {
            ident,
            ty: &pt.ty,
            attrs: &pt.attrs,
        });
    }
    params
}

/// Checks a `#[servicekit::main]` fn's signature.
pub(crate) fn main(sig: &Signature, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.add(sig.fn_token, "`#[servicekit::main]` requires an `async fn`");
    }
    if !sig.inputs.is_empty() {
        errors.add(&sig.inputs, "`main` cannot take arguments");
    }
    if !sig.generics.params.is_empty() {
        errors.add(&sig.generics, "`main` cannot be generic");
    }
    if let Some(u) = &sig.unsafety {
        errors.add(u, "`main` cannot be an `unsafe fn`");
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && let Some((tokens, what)) = bad_output(ty)
    {
        errors.add(
            tokens,
            format!(
                "`#[servicekit::main]` returns `()` or `Result<(), E>` (the exit code comes from it), not {what}"
            ),
        );
    }
}
