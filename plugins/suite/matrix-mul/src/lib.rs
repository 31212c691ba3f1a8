//! The `matrix-mul` plugin: [`passage_suite::matrix_mul::MatrixMul`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::matrix_mul::MatrixMul);
