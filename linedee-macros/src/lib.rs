//! The `#[ld_task]` attribute of linedee.
//!
//! Do not depend on this crate directly: use it as `linedee_task::ld_task`, whose
//! documentation describes the arguments and the generated code.
//!
//! Layout: `attr.rs` parses the arguments and checks the function, `expand.rs` emits the
//! code. On error the untouched item is emitted next to `compile_error!`, so the rest of
//! the crate still type-checks and only the real mistake is reported.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use proc_macro::TokenStream;

mod attr;
mod expand;

/// Registers a function as a linedee task. See `linedee_task::ld_task`.
#[proc_macro_attribute]
pub fn ld_task(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let item = proc_macro2::TokenStream::from(item);
    match attr::parse(args, item.clone()) {
        Ok(task) => expand::expand(&task).into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote::quote!(#err #item).into()
        }
    }
}
