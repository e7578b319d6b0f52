//! `#[derive(Freeze)]` for airomem. Use it through the facade (`airomem`, feature `derive`),
//! as `airomem::Freeze`: the generated code names `::airomem::Freeze`, so this crate alone
//! does not work.

use proc_macro::TokenStream;
use proc_macro2::{TokenStream as TokenStream2, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, Index, LitStr, parse_macro_input};

/// Implements `airomem::Freeze` for a struct whose fields all implement it.
///
/// The view is a hidden struct holding each field's view; it serializes exactly as
/// `#[derive(Serialize)]` serializes the struct (the same struct name, field names, order
/// and shape), and its `copied` adds up the fields'. Every field type must implement
/// `Freeze`; generic parameters get the bound where the fields need it.
///
/// Refused, because the view could then serialize differently from the struct: enums and
/// unions, and any `#[serde(...)]` attribute on the struct or a field (the derive does not
/// see a `cfg_attr` that expands to one, so do not write that either). It assumes the
/// struct's `Serialize` is `#[derive(Serialize)]`; for a hand-written one, implement
/// `Freeze` by hand.
///
/// ```text
/// #[derive(Serialize, Deserialize, Default, airomem::Freeze)]
/// struct Sessions {
///     tokens: airomem::collections::ShardedMap<String, u64>,
///     created: u64,
/// }
/// ```
///
/// (A doctest here could not reach `airomem`, which depends on this crate; the facade's
/// `collections` module runs this example.)
#[proc_macro_derive(Freeze)]
pub fn derive_freeze(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(Error::into_compile_error).into()
}

fn refuse_serde_attributes(attrs: &[syn::Attribute], what: &str) -> syn::Result<()> {
    match attrs.iter().find(|attr| attr.path().is_ident("serde")) {
        Some(attr) => Err(Error::new_spanned(
            attr,
            format!(
                "#[derive(Freeze)] does not support #[serde(...)] on {what}: its view serializes as \
                 #[derive(Serialize)] does without attributes, so a snapshot would not decode as this \
                 type. Implement airomem::Freeze by hand, or wrap the value in \
                 airomem::collections::ByClone"
            ),
        )),
        None => Ok(()),
    }
}

/// Whether `tokens` name one of `idents` anywhere, groups included.
fn mentions_any(tokens: TokenStream2, idents: &[&syn::Ident]) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => idents.iter().any(|candidate| ident == **candidate),
        TokenTree::Group(group) => mentions_any(group.stream(), idents),
        _ => false,
    })
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    refuse_serde_attributes(&input.attrs, "the struct")?;
    let data = match &input.data {
        Data::Struct(data) => data,
        Data::Enum(data) => {
            return Err(Error::new(
                data.enum_token.span(),
                "#[derive(Freeze)] supports structs only: an enum's variants change wholesale, so a \
                 view of one would have to clone it. Implement airomem::Freeze by hand, or wrap the \
                 enum in airomem::collections::ByClone",
            ));
        }
        Data::Union(data) => {
            return Err(Error::new(data.union_token.span(), "#[derive(Freeze)] supports structs only"));
        }
    };
    for field in &data.fields {
        refuse_serde_attributes(&field.attrs, "a field")?;
    }

    let name = &input.ident;
    let name_str = LitStr::new(&name.unraw().to_string(), name.span());
    let view = format_ident!("__AiromemFrozen{}", name.unraw());
    let freeze = quote!(::airomem::Freeze);
    let serde = quote!(::airomem::__private::serde);

    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::parse_quote!(where));
    // Bounds only for the field types that name a type parameter: a concrete type without
    // Freeze is then reported at the field (through its view's type), not as a false bound
    // at the derive.
    let type_params: Vec<&syn::Ident> = input.generics.type_params().map(|param| &param.ident).collect();
    for field in &data.fields {
        let ty = &field.ty;
        if mentions_any(ty.to_token_stream(), &type_params) {
            where_clause.predicates.push(syn::parse_quote!(#ty: #freeze));
        }
    }
    // The view names the type parameters, and a view must be 'static: so must they.
    for param in input.generics.type_params() {
        let ident = &param.ident;
        where_clause.predicates.push(syn::parse_quote!(#ident: 'static));
    }
    let params = &input.generics.params;

    let types: Vec<_> = data.fields.iter().map(|field| &field.ty).collect();
    let members: Vec<syn::Member> = data
        .fields
        .iter()
        .enumerate()
        .map(|(i, field)| match &field.ident {
            Some(ident) => syn::Member::Named(ident.clone()),
            None => syn::Member::Unnamed(Index { index: i as u32, span: field.ty.span() }),
        })
        .collect();
    let frozen_types: Vec<_> = types.iter().map(|ty| quote_spanned!(ty.span()=> <#ty as #freeze>::Frozen)).collect();
    let freezes: Vec<_> =
        types.iter().zip(&members).map(|(ty, member)| quote!(<#ty as #freeze>::freeze(&self.#member))).collect();

    let (definition, construction) = match &data.fields {
        Fields::Named(_) => {
            let idents: Vec<_> = data.fields.iter().filter_map(|field| field.ident.as_ref()).collect();
            (
                quote!(pub struct #view<#params> #where_clause { #(#idents: #frozen_types,)* }),
                quote!(#view { #(#idents: #freezes,)* }),
            )
        }
        Fields::Unnamed(_) => {
            (quote!(pub struct #view<#params>(#(#frozen_types,)*) #where_clause;), quote!(#view(#(#freezes,)*)))
        }
        Fields::Unit => (quote!(pub struct #view<#params> #where_clause;), quote!(#view)),
    };

    // What #[derive(Serialize)] writes for each shape of struct, call for call.
    let body = match &data.fields {
        Fields::Named(_) => {
            let len = members.len();
            let field_names: Vec<_> = data
                .fields
                .iter()
                .filter_map(|field| field.ident.as_ref())
                .map(|ident| LitStr::new(&ident.unraw().to_string(), ident.span()))
                .collect();
            quote! {
                let mut __state = #serde::Serializer::serialize_struct(__serializer, #name_str, #len)?;
                #(#serde::ser::SerializeStruct::serialize_field(&mut __state, #field_names, &self.#members)?;)*
                #serde::ser::SerializeStruct::end(__state)
            }
        }
        Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
            quote!(#serde::Serializer::serialize_newtype_struct(__serializer, #name_str, &self.0))
        }
        Fields::Unnamed(_) => {
            let len = members.len();
            quote! {
                let mut __state = #serde::Serializer::serialize_tuple_struct(__serializer, #name_str, #len)?;
                #(#serde::ser::SerializeTupleStruct::serialize_field(&mut __state, &self.#members)?;)*
                #serde::ser::SerializeTupleStruct::end(__state)
            }
        }
        Fields::Unit => quote!(#serde::Serializer::serialize_unit_struct(__serializer, #name_str)),
    };

    Ok(quote! {
        const _: () = {
            // Public in name only (it is unreachable inside this block): a private type
            // could not be the `Frozen` of a public struct's impl.
            #[doc(hidden)]
            #[allow(private_bounds, non_camel_case_types, unreachable_pub)]
            #definition

            impl #impl_generics #serde::Serialize for #view #ty_generics #where_clause {
                fn serialize<__S: #serde::Serializer>(
                    &self,
                    __serializer: __S,
                ) -> ::core::result::Result<__S::Ok, __S::Error> {
                    #body
                }
            }

            impl #impl_generics #freeze for #name #ty_generics #where_clause {
                type Frozen = #view #ty_generics;

                fn freeze(&self) -> Self::Frozen {
                    #construction
                }

                fn copied(__frozen: &Self::Frozen) -> u64 {
                    0 #(+ <#types as #freeze>::copied(&__frozen.#members))*
                }
            }
        };
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(input: DeriveInput) -> String {
        match expand(&input) {
            Ok(tokens) => panic!("expanded instead of refusing: {tokens}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn enums_are_refused() {
        let message = refusal(syn::parse_quote!(
            enum Mode {
                On,
                Off,
            }
        ));
        assert!(message.contains("supports structs only"), "{message}");
    }

    #[test]
    fn serde_attributes_are_refused_on_the_struct_and_its_fields() {
        let message = refusal(syn::parse_quote!(
            #[serde(rename_all = "camelCase")]
            struct Renamed {
                some_count: u64,
            }
        ));
        assert!(message.contains("#[serde(...)] on the struct"), "{message}");
        let message = refusal(syn::parse_quote!(
            struct Counters {
                #[serde(rename = "n")]
                count: u64,
            }
        ));
        assert!(message.contains("#[serde(...)] on a field"), "{message}");
    }

    #[test]
    fn only_generic_field_types_get_a_bound() {
        let tokens = expand(&syn::parse_quote!(
            struct Both<T> {
                map: Map<String, T>,
                count: u64,
            }
        ))
        .expect("expands")
        .to_string();
        assert!(tokens.contains("Map < String , T > : :: airomem :: Freeze"), "{tokens}");
        assert!(!tokens.contains("u64 : :: airomem :: Freeze"), "{tokens}");
        assert!(tokens.contains("T : 'static"), "{tokens}");
    }
}
