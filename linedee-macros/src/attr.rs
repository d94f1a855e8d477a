//! Parses `#[ld_task(...)]`: the arguments and the function they sit on.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Ident, Item, ItemFn, Lit, Token};

/// The keys `#[ld_task(...)]` accepts, as listed in error messages.
const VALID_KEYS: &str = "`name`, `machine`, `timeout`, `no_output`, `retries`, `crate`";

/// Subcommands of `linedee_task::main()`, which a task cannot be called.
const RESERVED: &[&str] = &["help", "list", "procfile"];

/// Heroku dyno sizes (SPEC 2.5), lowercase.
const MACHINES: &[&str] = &[
    "eco",
    "basic",
    "standard-1x",
    "standard-2x",
    "performance-m",
    "performance-l",
    "performance-l-ram",
    "performance-xl",
    "performance-2xl",
    "private-s",
    "private-m",
    "private-l",
    "private-l-ram",
    "private-xl",
    "private-2xl",
    "shield-s",
    "shield-m",
    "shield-l",
    "shield-l-ram",
    "shield-xl",
    "shield-2xl",
];

/// How the function takes its context.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgKind {
    /// `ctx: TaskContext`
    ByValue,
    /// `ctx: &TaskContext`
    ByRef,
}

/// A checked `#[ld_task]` invocation.
pub(crate) struct Task {
    pub(crate) func: ItemFn,
    pub(crate) name: String,
    pub(crate) machine: Option<String>,
    pub(crate) timeout: Option<u64>,
    pub(crate) no_output: bool,
    pub(crate) retries: Option<u32>,
    pub(crate) krate: syn::Path,
    pub(crate) arg: ArgKind,
}

/// The arguments as written, before defaults.
#[derive(Default)]
struct Args {
    name: Option<(String, Span)>,
    machine: Option<String>,
    timeout: Option<u64>,
    no_output: bool,
    retries: Option<u32>,
    krate: Option<syn::Path>,
}

/// Parses and checks everything; every problem found is reported, not only the first.
pub(crate) fn parse(args: TokenStream, item: TokenStream) -> syn::Result<Task> {
    let mut errors = Errors::default();
    let args = match parse_args.parse2(args) {
        Ok(args) => args,
        Err(err) => {
            errors.push(err);
            Args::default()
        }
    };
    let func = match syn::parse2::<Item>(item) {
        Ok(Item::Fn(func)) => Some(func),
        Ok(other) => {
            errors.push(syn::Error::new(
                item_span(&other),
                format!(
                    "#[ld_task] goes on a `fn` or `async fn` taking `TaskContext` or \
                     `&TaskContext`, not on {}",
                    item_kind(&other)
                ),
            ));
            None
        }
        Err(err) => {
            errors.push(err);
            None
        }
    };
    let Some(func) = func else {
        return Err(errors.finish().unwrap_or_else(unreachable_error));
    };
    let arg = check_signature(&func, &mut errors);
    let name = match args.name {
        Some((name, span)) => check_name(&name, span, false, &mut errors),
        None => {
            let ident = func.sig.ident.unraw().to_string().replace('_', "-");
            check_name(&ident, func.sig.ident.span(), true, &mut errors)
        }
    };
    if let Some(err) = errors.finish() {
        return Err(err);
    }
    Ok(Task {
        func,
        name,
        machine: args.machine,
        timeout: args.timeout,
        no_output: args.no_output,
        retries: args.retries,
        krate: args
            .krate
            .unwrap_or_else(|| syn::parse_quote!(::linedee_task)),
        arg: arg.unwrap_or(ArgKind::ByValue),
    })
}

fn unreachable_error() -> syn::Error {
    syn::Error::new(Span::call_site(), "#[ld_task]: invalid item")
}

/// Collects errors so that one compile reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }
    fn finish(self) -> Option<syn::Error> {
        self.0
    }
}

fn parse_args(input: ParseStream<'_>) -> syn::Result<Args> {
    let mut args = Args::default();
    let mut errors = Errors::default();
    let mut seen: Vec<String> = Vec::new();
    while !input.is_empty() {
        let key = Ident::parse_any(input)?;
        let key_name = key.to_string();
        let value: Option<Lit> = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        if seen.contains(&key_name) {
            errors.push(syn::Error::new(
                key.span(),
                format!("duplicate key `{key_name}`: give each of {VALID_KEYS} at most once"),
            ));
        } else {
            seen.push(key_name.clone());
            if let Err(err) = apply(&mut args, &key, value) {
                errors.push(err);
            }
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    match errors.finish() {
        Some(err) => Err(err),
        None => Ok(args),
    }
}

fn apply(args: &mut Args, key: &Ident, value: Option<Lit>) -> syn::Result<()> {
    let key_name = key.to_string();
    let need = |what: &str| {
        syn::Error::new(
            key.span(),
            format!("`{key_name}` needs a value: `{key_name} = {what}`"),
        )
    };
    match key_name.as_str() {
        "name" => match value {
            Some(Lit::Str(s)) => args.name = Some((s.value(), s.span())),
            Some(other) => return Err(expected(&other, "a string: `name = \"my-task\"`")),
            None => return Err(need("\"my-task\"")),
        },
        "machine" => match value {
            Some(Lit::Str(s)) => {
                let machine = s.value().to_ascii_lowercase();
                if !MACHINES.contains(&machine.as_str()) {
                    return Err(syn::Error::new(
                        s.span(),
                        format!(
                            "unknown machine `{}`: expected a Heroku dyno size, one of {}",
                            s.value(),
                            MACHINES.join(", ")
                        ),
                    ));
                }
                args.machine = Some(machine);
            }
            Some(other) => return Err(expected(&other, "a string: `machine = \"standard-2x\"`")),
            None => return Err(need("\"basic\"")),
        },
        "timeout" => match value {
            Some(Lit::Int(i)) => match i.base10_parse::<u64>() {
                Ok(secs) if (1..=86_400).contains(&secs) => args.timeout = Some(secs),
                _ => {
                    return Err(syn::Error::new(
                        i.span(),
                        "`timeout` is whole seconds from 1 to 86400",
                    ));
                }
            },
            Some(other) => return Err(expected(&other, "whole seconds: `timeout = 60`")),
            None => return Err(need("60")),
        },
        "retries" => match value {
            Some(Lit::Int(i)) => match i.base10_parse::<u32>() {
                Ok(n) => args.retries = Some(n),
                Err(_) => {
                    return Err(syn::Error::new(
                        i.span(),
                        "`retries` is a whole number (u32)",
                    ));
                }
            },
            Some(other) => return Err(expected(&other, "a whole number: `retries = 2`")),
            None => return Err(need("2")),
        },
        "no_output" => match value {
            None => args.no_output = true,
            Some(Lit::Bool(b)) => args.no_output = b.value,
            Some(other) => return Err(expected(&other, "`no_output` or `no_output = true`")),
        },
        "crate" => match value {
            Some(Lit::Str(s)) => args.krate = Some(s.parse()?),
            Some(other) => return Err(expected(&other, "a path: `crate = \"::linedee_task\"`")),
            None => return Err(need("\"::linedee_task\"")),
        },
        _ => {
            return Err(syn::Error::new(
                key.span(),
                format!("unknown key `{key_name}`: expected one of {VALID_KEYS}"),
            ));
        }
    }
    Ok(())
}

fn expected(lit: &Lit, what: &str) -> syn::Error {
    syn::Error::new(lit.span(), format!("expected {what}"))
}

/// Checks `fn name(ctx: TaskContext | &TaskContext) -> R`.
fn check_signature(func: &ItemFn, errors: &mut Errors) -> Option<ArgKind> {
    const SHAPE: &str = "a task takes one argument, `ctx: TaskContext` or `ctx: &TaskContext`";
    let sig = &func.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "a task cannot be generic: the runtime calls it by name",
        ));
    }
    if let Some(token) = &sig.unsafety {
        errors.push(syn::Error::new(
            token.span,
            "a task cannot be an `unsafe fn`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "a task cannot have an `extern` ABI",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(variadic, SHAPE));
    }
    const RESULT: &str = "a task returns `Result<T, E>` (T: `()`, `Json<_>` or `Output`; \
                          E: an error type or `anyhow::Error`), e.g. `-> anyhow::Result<()>`";
    match &sig.output {
        syn::ReturnType::Default => {
            errors.push(syn::Error::new(sig.paren_token.span.close(), RESULT));
        }
        // Any path ending in `…Result` passes here (`io::Result`, aliases); the trait
        // bounds of the generated call check the rest.
        syn::ReturnType::Type(_, ty) if !is_result(ty) => {
            errors.push(syn::Error::new_spanned(ty, RESULT));
        }
        syn::ReturnType::Type(..) => {}
    }
    let mut inputs = sig.inputs.iter();
    let (Some(first), None) = (inputs.next(), inputs.next()) else {
        let span = if sig.inputs.is_empty() {
            sig.paren_token.span.join()
        } else {
            sig.inputs.span()
        };
        errors.push(syn::Error::new(span, SHAPE));
        return None;
    };
    let ty = match first {
        syn::FnArg::Typed(pat) => &*pat.ty,
        syn::FnArg::Receiver(recv) => {
            errors.push(syn::Error::new_spanned(recv, SHAPE));
            return None;
        }
    };
    let kind = match ty {
        syn::Type::Reference(r) if r.mutability.is_none() && is_task_context(&r.elem) => {
            Some(ArgKind::ByRef)
        }
        ty if is_task_context(ty) => Some(ArgKind::ByValue),
        _ => None,
    };
    if kind.is_none() {
        errors.push(syn::Error::new_spanned(ty, SHAPE));
    }
    kind
}

fn is_result(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|seg| seg.ident.to_string().ends_with("Result")),
        syn::Type::Paren(p) => is_result(&p.elem),
        syn::Type::Group(g) => is_result(&g.elem),
        _ => false,
    }
}

fn is_task_context(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|seg| seg.ident == "TaskContext" && seg.arguments.is_none()),
        syn::Type::Paren(p) => is_task_context(&p.elem),
        syn::Type::Group(g) => is_task_context(&g.elem),
        _ => false,
    }
}

/// Checks a Procfile process type name: `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
fn check_name(name: &str, span: Span, derived: bool, errors: &mut Errors) -> String {
    if RESERVED.contains(&name) {
        errors.push(syn::Error::new(
            span,
            format!(
                "`{name}` is a subcommand of the task app ({}); give the task another \
                 `name = \"...\"`",
                RESERVED.join(", ")
            ),
        ));
    } else if !valid_name(name) {
        let why = "task names are Procfile process types and must match \
                   `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$` (lowercase letters, digits and `-`, \
                   at most 63, not starting or ending with `-`)";
        let msg = if derived {
            format!(
                "the task name `{name}` derived from the function name is invalid: {why}; \
                 set one with `#[ld_task(name = \"...\")]`"
            )
        } else {
            format!("invalid task name `{name}`: {why}")
        };
        errors.push(syn::Error::new(span, msg));
    }
    name.to_owned()
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && edge(first)
                && edge(last)
                && bytes.iter().all(|b| edge(b) || *b == b'-')
        }
        _ => false,
    }
}

fn item_kind(item: &Item) -> &'static str {
    match item {
        Item::Struct(_) => "a struct",
        Item::Enum(_) => "an enum",
        Item::Impl(_) => "an impl block",
        Item::Mod(_) => "a module",
        Item::Const(_) => "a const",
        Item::Static(_) => "a static",
        Item::Trait(_) => "a trait",
        Item::Type(_) => "a type alias",
        Item::Use(_) => "a use declaration",
        _ => "this item",
    }
}

fn item_span(item: &Item) -> Span {
    match item {
        Item::Struct(s) => s.ident.span(),
        Item::Enum(e) => e.ident.span(),
        Item::Mod(m) => m.ident.span(),
        Item::Const(c) => c.ident.span(),
        Item::Static(s) => s.ident.span(),
        Item::Trait(t) => t.ident.span(),
        Item::Type(t) => t.ident.span(),
        other => other.span(),
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_follow_herokus_rule() {
        for ok in ["a", "process-image", "get-json", "x1", &"a".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
