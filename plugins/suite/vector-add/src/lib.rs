//! The `vector-add` plugin: [`passage_suite::vector_add::VectorAdd`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::vector_add::VectorAdd);
