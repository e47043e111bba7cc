//! Checks the annotated function and generates the code.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

use crate::attr::{Dur, Errors, parse_main_args, parse_service_args};

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

/// Whether a parameter is marked `#[context]`: the context behind a type alias,
/// which the macro cannot see through.
fn is_context_marker(attr: &syn::Attribute) -> bool {
    attr.path().is_ident("context")
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

/// Gives every token the span of the user's tokens, so an error on a generated call
/// points at them.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let proc_macro2::TokenTree::Group(g) = &t {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                ng.set_span(span);
                t = proc_macro2::TokenTree::Group(ng);
            } else {
                t.set_span(span);
            }
            t
        })
        .collect()
}

fn duration(krate: &TokenStream, d: Dur) -> TokenStream {
    let nanos = d.nanos as u64;
    quote_spanned!(d.span=> #krate::__private::__Duration::from_nanos(#nanos))
}

/// `#[service]`.
pub(crate) fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(e.span(), "`#[service]` can only be used on an `async fn`")
                .to_compile_error();
            return quote!(#e #item);
        }
    };
    let mut errors = Errors::default();
    let a = parse_service_args(args, &mut errors);
    let krate = match &a.krate {
        Some(p) => quote!(#p),
        None => quote!(::servicekit),
    };

    let sig = &func.sig;
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

    // Parameters: the context is injected, every other one is cloned for each run.
    let mut outer_params = Vec::new();
    let mut standin_params = Vec::new();
    let mut call_args = Vec::new();
    let mut clones = Vec::new();
    let mut has_context = false;
    for (i, arg) in sig.inputs.iter().enumerate() {
        match arg {
            FnArg::Receiver(r) => errors.add(
                r,
                "`#[service]` cannot be used on methods: a service is a free `async fn` (remove the `self` parameter)",
            ),
            FnArg::Typed(pt) => {
                let ty = &pt.ty;
                standin_params.push(quote!(_: #ty));
                let marked = pt.attrs.iter().any(is_context_marker);
                if marked || is_context(&pt.ty) {
                    if has_context {
                        errors.add(
                            pt,
                            "only one `ServiceContext` parameter is allowed; the runner injects a single context per run",
                        );
                    }
                    if matches!(&*pt.ty, Type::Reference(_)) {
                        errors.add(&pt.ty, "take the context by value: `ctx: ServiceContext` (it is cheap to clone)");
                    }
                    has_context = true;
                    call_args.push(quote!(__servicekit_ctx.clone()));
                    continue;
                }
                if let Type::ImplTrait(t) = &*pt.ty {
                    errors.add(t, "`impl Trait` arguments are not supported by `#[service]`; use a generic parameter");
                } else if let Some(borrow) = borrowed_lifetime(&pt.ty) {
                    errors.add(
                        borrow,
                        "`#[service]` arguments are kept and cloned for every run, so they must be owned: take a `String` instead of a `&str`, an owned value or an `Arc` instead of a reference",
                    );
                }
                let ident = match &*pt.pat {
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
                    _ => format_ident!("__servicekit_arg{}", i),
                };
                let ty = &pt.ty;
                let attrs = &pt.attrs;
                outer_params.push(quote!(#(#attrs)* #ident: #ty));
                clones.push(quote_spanned! {ty.span()=>
                    let #ident = #krate::__private::clone_arg::<#ty>(&#ident);
                });
                call_args.push(quote!(#ident));
            }
        }
    }

    let vis = &func.vis;
    let name_ident = &sig.ident;
    let attrs = &func.attrs;
    let generics = &sig.generics;
    let (_, ty_generics, where_clause) = generics.split_for_impl();
    let service_name = match &a.name {
        Some(n) => n.value(),
        None => name_ident.to_string(),
    };

    if let Err(e) = errors.into_result() {
        let e = e.to_compile_error();
        // A stand-in with the final signature keeps callers and IDEs working.
        return quote! {
            #e
            #(#attrs)*
            #vis fn #name_ident #generics (#(#standin_params),*) -> #krate::Service #where_clause {
                ::core::unreachable!("`#[service]` reported an error")
            }
        };
    }

    let mut builder = Vec::new();
    if let Some((r, span)) = &a.restart {
        let variant = match r.as_str() {
            "always" => quote_spanned!(*span=> Always),
            "never" => quote_spanned!(*span=> Never),
            _ => quote_spanned!(*span=> OnFailure),
        };
        builder.push(quote!(.restart(#krate::Restart::#variant)));
    }
    if let Some(d) = a.every {
        let d = duration(&krate, d);
        builder.push(quote!(.every(#d)));
    }
    if let Some((base, cap)) = a.backoff {
        let (b, c) = (duration(&krate, base), duration(&krate, cap));
        builder.push(quote!(.backoff(#b, #c)));
    }
    if let Some(d) = a.reset_after {
        let d = duration(&krate, d);
        builder.push(quote!(.reset_after(#d)));
    }
    if a.max_restarts.is_some() || a.within.is_some() {
        let max = match a.max_restarts {
            Some((n, _)) => quote!(#n),
            None => quote!(#krate::__private::DEFAULT_MAX_RESTARTS),
        };
        let within = match a.within {
            Some(d) => duration(&krate, d),
            None => quote!(#krate::__private::DEFAULT_WITHIN),
        };
        builder.push(quote!(.max_restarts(#max, #within)));
    }
    if let Some((v, span)) = &a.on_give_up {
        let variant = if v == "ignore" {
            quote_spanned!(*span=> Ignore)
        } else {
            quote_spanned!(*span=> Shutdown)
        };
        builder.push(quote!(.on_give_up(#krate::OnGiveUp::#variant)));
    }
    if let Some(d) = a.shutdown_timeout {
        let d = duration(&krate, d);
        builder.push(quote!(.shutdown_timeout(#d)));
    }
    if !a.after.is_empty() {
        let after = &a.after;
        builder.push(quote!(.after([#(#after),*])));
    }

    // The body keeps the user's signature (context included) as an inner fn, so type
    // errors in it point at the user's code.
    let mut inner_sig = sig.clone();
    inner_sig.ident = format_ident!("__servicekit_body");
    for arg in &mut inner_sig.inputs {
        if let FnArg::Typed(pt) = arg {
            pt.attrs.retain(|a| !is_context_marker(a));
        }
    }
    let block = &func.block;
    let output_span = match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, t) => t.span(),
    };
    let turbofish = if generics.params.is_empty() {
        quote!()
    } else {
        let t = ty_generics.as_turbofish();
        quote!(#t)
    };
    let run_body = respan(
        quote!(#krate::__private::check_output(__servicekit_body #turbofish (#(#call_args),*))),
        output_span,
    );
    let ctx_param = if has_context {
        quote!(__servicekit_ctx: #krate::ServiceContext)
    } else {
        quote!(_: #krate::ServiceContext)
    };

    quote! {
        #(#attrs)*
        #[must_use = "a Service does nothing until it is given to a runner"]
        #vis fn #name_ident #generics (#(#outer_params),*) -> #krate::Service #where_clause {
            #[allow(clippy::needless_pass_by_value, clippy::unused_async)]
            #inner_sig #block

            #krate::__private::service(
                #service_name,
                #has_context,
                move |#ctx_param| {
                    #(#clones)*
                    #run_body
                },
            )
            #(#builder)*
        }
    }
}

/// `#[servicekit::main]`.
pub(crate) fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(
                e.span(),
                "`#[servicekit::main]` can only be used on `async fn main`",
            )
            .to_compile_error();
            return quote!(#e #item);
        }
    };
    let mut errors = Errors::default();
    let a = parse_main_args(args, &mut errors);
    let krate = match &a.krate {
        Some(p) => quote!(#p),
        None => quote!(::servicekit),
    };
    let sig = &func.sig;
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
    let attrs = &func.attrs;
    let vis = &func.vis;
    let ident = &sig.ident;
    if let Err(e) = errors.into_result() {
        let e = e.to_compile_error();
        return quote! {
            #e
            #(#attrs)*
            #vis fn #ident() -> ::std::process::ExitCode {
                ::core::unreachable!("`#[servicekit::main]` reported an error")
            }
        };
    }
    let output = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => quote!(#t),
    };
    let out_span = match &sig.output {
        ReturnType::Default => Span::call_site(),
        ReturnType::Type(_, t) => t.span(),
    };
    let block = &func.block;
    let multi = a.multi_thread;
    let tracing = a.tracing;
    let threads = match a.worker_threads {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let shutdown = a.runtime_shutdown as u64;
    let body = quote_spanned! {out_span=>
        async move {
            let __servicekit_out: #output = async move #block.await;
            __servicekit_out
        }
    };
    quote! {
        #(#attrs)*
        #vis fn #ident() -> ::std::process::ExitCode {
            #krate::__private::run_main(
                #krate::__private::MainConfig {
                    multi_thread: #multi,
                    worker_threads: #threads,
                    tracing: #tracing,
                    runtime_shutdown: #krate::__private::__Duration::from_nanos(#shutdown),
                },
                #body,
            )
        }
    }
}
