#[servicekit::main(crate = "::a b")]
async fn main() {}
