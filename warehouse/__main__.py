from warehouse.launch import main

main()
