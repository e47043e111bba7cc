use std::borrow::Cow;

use servicekit::service;

#[service]
async fn greets(name: &str) {
    println!("{name}");
}

#[service]
async fn cows(text: Cow<'static, str>, other: Vec<Cow<'_, str>>) {
    println!("{text} {other:?}");
}

fn main() {}
