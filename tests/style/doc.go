// Package style holds repository-wide checks that keep the code base in
// shape: every package has exactly one package doc comment, and light
// packages stay light (api/v1 and omaha import only the standard library).
package style
