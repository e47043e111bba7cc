//! Generates the code of `#[service]` and `#[servicekit::main]` from the parsed
//! arguments ([`crate::args`]) and the checked signature ([`crate::check`]).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

use crate::args::{Dur, Errors, Flavor, GiveUp, MainArgs, Reload, Restart, ServiceArgs};
use crate::check::{self, Param};

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
    let nanos = d.nanos;
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
    let a = ServiceArgs::parse(args, &mut errors);
    let krate = match &a.krate {
        Some(p) => quote!(#p),
        None => quote!(::servicekit),
    };
    let sig = &func.sig;
    let params = check::service(sig, &mut errors);
    if let Some(w) = a.watchdog {
        match a.every {
            Some(every) if every.nanos >= w.nanos => errors.push(syn::Error::new(
                w.span,
                "`watchdog` must be longer than the period `every`: a periodic service's heartbeat is each tick",
            )),
            Some(_) => {}
            None if !params.iter().any(|p| matches!(p, Param::Context(_))) => {
                errors.push(syn::Error::new(
                    w.span,
                    "`watchdog` needs a `ServiceContext` parameter: the body tells the watchdog it is alive with `ctx.heartbeat()`",
                ));
            }
            None => {}
        }
    }

    // The context is injected, every other parameter is cloned for each run.
    let mut outer_params = Vec::new();
    let mut standin_params = Vec::new();
    let mut standin_uses = Vec::new();
    let mut call_args = Vec::new();
    let mut clones = Vec::new();
    for param in &params {
        match param {
            Param::Context(ty) => {
                // The stand-in keeps the context's type in use (no "unused import").
                standin_uses.push(
                    quote!(let _: ::core::option::Option<#ty> = ::core::option::Option::None;),
                );
                call_args.push(quote!(__servicekit_ctx.clone()));
            }
            Param::Arg { ident, ty, attrs } => {
                standin_params.push(quote!(_: #ty));
                outer_params.push(quote!(#(#attrs)* #ident: #ty));
                clones.push(quote_spanned! {ty.span()=>
                    let #ident = #krate::__private::clone_arg::<#ty>(&#ident);
                });
                call_args.push(quote!(#ident));
            }
        }
    }
    let has_context = params.iter().any(|p| matches!(p, Param::Context(_)));

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
                #(#standin_uses)*
                ::core::unreachable!("`#[service]` reported an error")
            }
        };
    }

    let mut builder = Vec::new();
    if let Some(r) = a.restart {
        let variant = match r.value {
            Restart::Always => quote_spanned!(r.span=> Always),
            Restart::OnFailure => quote_spanned!(r.span=> OnFailure),
            Restart::Never => quote_spanned!(r.span=> Never),
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
            Some(n) => quote!(#n),
            None => quote!(#krate::__private::DEFAULT_MAX_RESTARTS),
        };
        let within = match a.within {
            Some(d) => duration(&krate, d),
            None => quote!(#krate::__private::DEFAULT_WITHIN),
        };
        builder.push(quote!(.max_restarts(#max, #within)));
    }
    if let Some(g) = a.on_give_up {
        let variant = match g.value {
            GiveUp::Shutdown => quote_spanned!(g.span=> Shutdown),
            GiveUp::Ignore => quote_spanned!(g.span=> Ignore),
        };
        builder.push(quote!(.on_give_up(#krate::OnGiveUp::#variant)));
    }
    if let Some(r) = a.reload {
        let variant = match r.value {
            Reload::Restart => quote_spanned!(r.span=> Restart),
            Reload::Hook => quote_spanned!(r.span=> Hook),
        };
        builder.push(quote!(.reload(#krate::Reload::#variant)));
    }
    if let Some(d) = a.watchdog {
        let d = duration(&krate, d);
        builder.push(quote!(.watchdog(#d)));
    }
    if let Some(d) = a.shutdown_timeout {
        let d = duration(&krate, d);
        builder.push(quote!(.shutdown_timeout(#d)));
    }
    if let Some(g) = &a.group {
        builder.push(quote!(.group(#g)));
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
            pt.attrs.retain(|a| !check::is_context_marker(a));
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
    let a = MainArgs::parse(args, &mut errors);
    let krate = match &a.krate {
        Some(p) => quote!(#p),
        None => quote!(::servicekit),
    };
    let sig = &func.sig;
    check::main(sig, &mut errors);
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
    let multi = a.flavor == Flavor::MultiThread;
    let tracing = a.tracing.is_none_or(|t| t.value);
    // Generated here, not in `run_main`: nothing in servicekit imports its
    // operations layer.
    let systemd = a.systemd;
    let serve_http = match &a.http {
        None => quote!(),
        Some(addr) => quote_spanned! {addr.span()=>
            #krate::__require_http!();
            if let ::core::result::Result::Err(e) = #krate::ops::__main_http(#addr) {
                return #krate::__private::listen_failed(#addr, &e);
            }
        },
    };
    let enable_systemd = quote!(#krate::ops::__main_defaults(#systemd););
    // An explicit `tracing = true` needs the feature: a compile error without it.
    let require_tracing = match a.tracing {
        Some(t) if t.value => quote_spanned!(t.span=> #krate::__require_tracing_subscriber!();),
        _ => quote!(),
    };
    let threads = match a.worker_threads {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let shutdown = a.runtime_shutdown.nanos;
    let body = quote_spanned! {out_span=>
        async move {
            let __servicekit_out: #output = async move #block.await;
            __servicekit_out
        }
    };
    quote! {
        #(#attrs)*
        #vis fn #ident() -> ::std::process::ExitCode {
            #require_tracing
            #serve_http
            #enable_systemd
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
