// Package netnstest gives a test a fresh network namespace. It is apart
// from package netns so that programs using netns do not link package
// testing.
//
// The package is Linux-only: on other systems it is empty.
package netnstest
