from zoo._entry import main

main()
